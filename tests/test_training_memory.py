"""The memory estimate against XLA's compiled memory stats (CPU) and JAX's saved residuals.

The update is the trainer's: a jitted micro-step accumulating gradients, then a jitted apply; its temporaries are
those of the larger of the two programs. Tolerances: state and argument bytes exact (to 64 bytes); update-step
temporaries within [0.85, 1.25] x compiled;
log-prob forward and decode-step temporaries within [0.5, 2] x compiled (small buffers, fusion-dependent);
activations within 15% of `saved_residuals`.
"""

import contextlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax._src.ad_checkpoint import saved_residuals  # the list behind jax.ad_checkpoint.print_saved_residuals

from prorl_jax import models, parallel, rollout
from prorl_jax.training import memory
from prorl_jax.rollout import sampler as sampler_lib
from prorl_jax.training import config as config_lib
from prorl_jax.training import state as state_lib
from prorl_jax.training import update
from training_helpers import step_functions


def _model(**kw):
  base = dict(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2)
  return models.Qwen2Config(**dict(base, **kw))


def _optimizer():
  return state_lib.make_optimizer(ml_collections.ConfigDict(dict(
      lr=1e-3, warmup_steps=0, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0)))


def _abstract_batch(rows, prompt, resp):
  s = jax.ShapeDtypeStruct
  t = prompt + resp
  return update.TrainBatch(input_ids=s((rows, t), jnp.int32), attention_mask=s((rows, t), jnp.bool_),
                           response_mask=s((rows, resp), jnp.float32), advantages=s((rows, resp), jnp.float32),
                           old_logp=s((rows, resp), jnp.float32), ref_logp=s((rows, resp), jnp.float32))


class _Update:
  """The compiled update phase: `accumulate` (one micro-step) and `apply` memory analyses."""

  def __init__(self, accumulate, apply, accumulator_bytes, params_bytes):
    self.accumulate, self.apply = accumulate, apply
    self.accumulator_bytes, self.params_bytes = accumulator_bytes, params_bytes

  @property
  def resident(self) -> int:  # what apply reads besides the accumulated gradients: the train state
    return self.apply.argument_size_in_bytes - self.accumulator_bytes

  @property
  def batch(self) -> int:  # what a micro-step reads besides params and accumulator: the mini-batch (+ row ids)
    return self.accumulate.argument_size_in_bytes - self.params_bytes - self.accumulator_bytes

  @property
  def temp(self) -> int:
    return max(self.accumulate.temp_size_in_bytes, self.apply.temp_size_in_bytes)


def _compiled_update(cfg, rows, prompt, resp, chunk, mesh=None):
  opt = _optimizer()
  settings = update.LossSettings(prompt_len=prompt, kl_coef=1e-3, chunk_size=chunk)
  params = jax.eval_shape(lambda: models.init_params(cfg, jax.random.key(0)))
  state = jax.eval_shape(lambda p: state_lib.create_train_state(p, opt, seed=0), params)
  batch = _abstract_batch(rows, prompt, resp)
  fns = step_functions(cfg, settings, opt, mesh)
  s = jax.ShapeDtypeStruct
  acc = jax.eval_shape(update.zero_accumulator, params)
  norm = update.Normalizer(s((), jnp.float32), s((), jnp.float32), resp)
  widths = dict(prompt_width=prompt, response_width=resp)
  if mesh is not None:
    ss, bs = parallel.train_state_shardings(cfg, state, opt, mesh), parallel.rows_shardings(batch, mesh)
    place = lambda tree, sh: jax.tree.map(lambda x, h: s(x.shape, x.dtype, sharding=h), tree, sh)
    state, params, batch = place(state, ss), place(params, ss.params), place(batch, bs)
    acc = (place(acc[0], ss.params), acc[1])
  with jax.set_mesh(fns.mesh):
    accumulate = fns.jit_micro_accumulate.lower(params, acc, batch, s((rows,), jnp.int32), norm, **widths)
    apply = fns.jit_apply_gradients.lower(state, *acc)
    lp = fns.jit_micro_logprobs.lower(params, batch.old_logp, batch.input_ids, batch.attention_mask,
                                      s((rows,), jnp.int32), with_entropy=False, **widths)
    analyses = [p.compile().memory_analysis() for p in (accumulate, apply, lp)]
  return _Update(analyses[0], analyses[1], _sharded_bytes(acc), _sharded_bytes(params)), analyses[2]


def _sharded_bytes(tree) -> int:
  """Bytes one device holds of a tree of abstract arrays carrying shardings (replicated leaves count whole)."""
  total = 0
  for x in jax.tree.leaves(tree):
    sharding = getattr(x, "sharding", None)
    shape = sharding.shard_shape(x.shape) if sharding is not None else x.shape
    total += int(np.prod(shape)) * x.dtype.itemsize
  return total


UPDATE_CASES = {
    "fp32": (_model(), dict(rows=8, prompt=32, resp=96, chunk=64)),
    "fp32_wide_vocab": (_model(vocab_size=4000, hidden_size=256, intermediate_size=512, num_attention_heads=8),
                        dict(rows=4, prompt=16, resp=48, chunk=32)),
    "bf16": (_model(vocab_size=2000, intermediate_size=384, dtype="bfloat16"), dict(rows=8, prompt=32, resp=96,
                                                                                    chunk=128)),
}


@pytest.mark.parametrize("name", [n if n != "fp32_wide_vocab" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(UPDATE_CASES)])
def test_update_step_estimate_matches_compiled(name):
  cfg, shape = UPDATE_CASES[name]
  upd, lp = _compiled_update(cfg, shape["rows"], shape["prompt"], shape["resp"], shape["chunk"])
  est = memory.estimate_train(cfg, rows=shape["rows"], prompt_len=shape["prompt"], response_len=shape["resp"],
                              chunk_size=shape["chunk"])
  # Params, reference, both Adam moments and the batch: exact.
  assert abs(upd.resident - est.resident) <= 64 and abs(upd.batch - est.batch) <= 64
  assert est.params == cfg.num_params() * 4
  ratio = est.update_temp / upd.temp
  assert 0.85 <= ratio <= 1.25, (ratio, est.update_temp, upd.temp)
  lp_ratio = est.logprob_forward / lp.temp_size_in_bytes
  assert 0.5 <= lp_ratio <= 2.0, (lp_ratio, est.logprob_forward, lp.temp_size_in_bytes)


def test_sharded_state_bytes_per_device_are_exact():
  cfg = _model()
  mesh = parallel.make_mesh(dict(data=1, fsdp=4, tensor=2))
  upd, _ = _compiled_update(cfg, 16, 32, 32, 64, mesh=mesh)
  est = memory.estimate_train(cfg, rows=16, prompt_len=32, response_len=32, chunk_size=64, mesh=mesh)
  assert abs(upd.resident - est.resident) <= 64 and abs(upd.batch - est.batch) <= 64
  single = memory.estimate_train(cfg, rows=16, prompt_len=32, response_len=32, chunk_size=64)
  # Everything but the replicated norm weights, biases split over tensor only, and scalars is split 8 ways.
  assert single.resident / 8 <= est.resident < single.resident / 7


@pytest.mark.parametrize("dtype,remat", [("float32", False), ("bfloat16", False), ("float32", True),
                                         ("bfloat16", True)])
def test_activation_terms_match_saved_residuals(dtype, remat):
  cfg = _model(num_hidden_layers=2, dtype=dtype, remat=remat)
  params = models.init_params(cfg, jax.random.key(0))
  rows, prompt, resp = 8, 32, 96
  settings = update.LossSettings(prompt_len=prompt, chunk_size=64)
  ids = jnp.ones((rows, prompt + resp), jnp.int32)
  mask = jnp.ones((rows, prompt + resp), bool)
  f = lambda p: update.response_logprobs(cfg, p, ids, mask, settings).sum()
  saved = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a, why in saved_residuals(f, params)
              if "from the argument" not in why)
  est = memory.activation_bytes(cfg, rows, prompt, resp, include_recompute=False)
  assert abs(est / saved - 1) <= 0.15, (est, saved)


@pytest.mark.parametrize("sizes", [None, dict(data=2, fsdp=2, tensor=2)])
def test_decode_estimate_matches_compiled(sizes):
  cfg = _model()
  mesh = parallel.make_mesh(sizes) if sizes else None
  prompts, samples, prompt_len, new = 4, 4, 32, 96
  params = models.init_params(cfg, jax.random.key(0))
  sampling = rollout.SamplingParams(temperature=1.0)
  smp = rollout.Sampler(cfg, mesh=mesh, max_rows_per_chunk=prompts * samples)
  plan = smp.plan(prompt_len, prompts, new, samples)
  programs = smp.programs(params, sampling, (), new, samples, plan)
  if mesh is not None:
    params = jax.device_put(params, programs.param_shardings)
  window = plan.windows[-1]
  with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
    weights = programs.prepare()(params)
    state = jax.eval_shape(programs.empty(window))
    if mesh is not None:
      state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
                           programs.state_shardings(window))
    compiled = programs.segment(window).lower(weights, state, np.int32(prompts * samples)).compile()
  stats = compiled.memory_analysis()
  est = memory.estimate_rollout(cfg, rows=prompts * samples, prompt_len=prompt_len, max_new_tokens=new,
                                num_prompts=prompts, mesh=mesh)
  assert (est.column_copy > 0) == (mesh is None)  # one CPU device decodes in the column layout
  # The decode loop reads the weights as prepared (one CPU device: the column copy) and the slots' state.
  weights_bytes = est.column_copy if mesh is None else est.rollout_params
  assert abs(stats.argument_size_in_bytes - (weights_bytes + est.kv_cache + est.decode_state)) <= 256
  assert 0.5 <= est.step_temp / stats.temp_size_in_bytes <= 2.0, (est, stats.temp_size_in_bytes)


def test_estimate_run_for_the_real_model_is_consistent():
  cfg = models.Qwen2Config(dtype="bfloat16")  # Qwen2-1.5B dims
  run = config_lib.default_config()
  mesh = parallel.make_mesh(dict(data=1, fsdp=8, tensor=1))
  out = memory.estimate_run(run, cfg, mesh)
  params_gib = cfg.num_params() * 4 / 8 / memory.GiB
  # fp32 params, reference and two Adam moments split 8 ways (norm weights replicated: < 0.1% more).
  assert out["train"]["params"] == pytest.approx(params_gib, rel=1e-3)
  assert out["train"]["optimizer"] == pytest.approx(2 * params_gib, rel=1e-3)
  # Rollout: 384 prompts x 16 samples, (1024 + 8192) positions, 28 layers, 2 kv heads of 128 in bf16, 8 shards.
  kv = 384 * 16 // 8 * (1024 + 8192) * 2 * 28 * 2 * 128 * 2
  assert out["rollout"]["kv_cache"] == pytest.approx(kv / memory.GiB)
  assert out["rollout"]["duplicate_params"]  # the fsdp layout is not the sampling layout
  assert out["peak_gib"] >= max(out["train"]["total"], out["rollout"]["total"])
