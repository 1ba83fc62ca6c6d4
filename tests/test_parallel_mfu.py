"""FLOP counts of the update phase against XLA's own cost analysis, the peak table and the MFU arithmetic; a smoke
run of benchmarks/train_step.py (slow)."""

import json
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from prorl_jax import models
from prorl_jax.training import mfu, update
from prorl_jax.training import state as state_lib
from training_helpers import step_functions

P, R, B = 48, 80, 4


def _cost(compiled) -> float:
  cost = compiled.cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)["flops"])


@pytest.mark.parametrize("tied", [True, False])
def test_flop_counts_match_xla_cost_analysis(tied):
  cfg = models.Qwen2Config(vocab_size=4000, hidden_size=256, intermediate_size=704, num_hidden_layers=3,
                           num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=tied)
  opt = state_lib.make_optimizer(ml_collections.ConfigDict(dict(
      lr=1e-3, warmup_steps=0, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0)))
  # One LM-head chunk: XLA's cost analysis counts a while-loop body once, not once per iteration.
  settings = update.LossSettings(prompt_len=P, chunk_size=B * R)
  params = jax.eval_shape(lambda: models.init_params(cfg, jax.random.key(0)))
  state = jax.eval_shape(lambda p: state_lib.create_train_state(p, opt, seed=0), params)
  s = jax.ShapeDtypeStruct
  batch = update.TrainBatch(input_ids=s((B, P + R), jnp.int32), attention_mask=s((B, P + R), jnp.bool_),
                            response_mask=s((B, R), jnp.float32), advantages=s((B, R), jnp.float32),
                            old_logp=s((B, R), jnp.float32), ref_logp=s((B, R), jnp.float32))
  fns = step_functions(cfg, settings, opt)
  rows = s((B,), jnp.int32)
  widths = dict(prompt_width=P, response_width=R)
  forward = B * mfu.forward_flops_per_sequence(cfg, P, R)
  xla_forward = _cost(fns.jit_micro_logprobs.lower(params, batch.old_logp, batch.input_ids, batch.attention_mask,
                                                   rows, with_entropy=False, **widths).compile())
  # Our count is matmuls only; XLA adds the elementwise work (norms, softmax, rotary): a few percent.
  assert 1.0 <= xla_forward / forward <= 1.05, xla_forward / forward
  acc = jax.eval_shape(update.zero_accumulator, params)
  norm = update.Normalizer(s((), jnp.float32), s((), jnp.float32), R)
  xla_update = _cost(fns.jit_micro_accumulate.lower(params, acc, batch, rows, norm, **widths).compile())
  assert 1.0 <= xla_update / (3 * forward) <= 1.12, xla_update / (3 * forward)
  assert mfu.update_flops_per_sequence(cfg, P, R) == 5 * forward / B
  assert mfu.update_flops_per_token(cfg, P, R) * (P + R) == pytest.approx(5 * forward / B)


def test_peak_table_and_mfu():
  h100 = types.SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3", platform="gpu")
  assert mfu.peak_flops_from_table(h100) == 989e12
  assert mfu.peak_flops_from_table(h100, jnp.float32) == 989e12 / 2  # TF32
  assert mfu.peak_flops_from_table(types.SimpleNamespace(device_kind="TPU v5 lite", platform="tpu")) == 197e12
  assert mfu.peak_flops_from_table(types.SimpleNamespace(device_kind="cpu", platform="cpu")) is None
  peak, source = mfu.peak_flops(jax.devices()[0], jnp.float32)
  assert source == "measured_matmul" and 1e9 < peak < 1e13
  cfg = models.Qwen2Config(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2)
  per_seq = mfu.update_flops_per_sequence(cfg, 16, 48)
  assert mfu.mfu(10.0, cfg, 16, 48, peak_flops_per_second=per_seq * 40, num_devices=2) == pytest.approx(0.125)


@pytest.mark.slow
def test_train_step_benchmark_smoke():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  argv = [sys.executable, "-m", "benchmarks.train_step", "--hidden=64", "--intermediate=128", "--layers=2",
          "--heads=4", "--vocab=500", "--batch=4", "--prompt=16", "--response=32", "--repeats=1", "--rounds=1",
          "--devices=2"]
  proc = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.loads(proc.stdout[proc.stdout.index("{"):])
  assert out["prorl_jax"]["tokens_per_s"] > 0 and out["transformers"]["tokens_per_s"] > 0
  # Same weights, batch and loss: the two engines agree.
  assert out["agreement"]["logp_step1_max_abs_diff"] < 1e-4
  assert out["agreement"]["grad_norm_rel_diff"] < 1e-4
  assert out["agreement"]["logp_step2_max_abs_diff"] < 1e-3 < out["agreement"]["logp_step_change_max"]
