"""Small, fast trainer configs built on the embedded default (tiny.py) for tests."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMING_PREFIXES = ("time/", "throughput/")


def small_model_config():
  """A 2-layer Qwen2 with GQA (4 query / 2 kv heads), for train-step tests."""
  from prorl_jax import models
  return models.Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2)


def small_optimizer():
  """AdamW (lr 1e-3, weight decay 0.01) with global-norm clipping at 1.0, no warm-up."""
  import ml_collections
  from prorl_jax.training import state as state_lib
  return state_lib.make_optimizer(ml_collections.ConfigDict(dict(
      lr=1e-3, warmup_steps=0, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6, grad_clip=1.0)))


def step_functions(model_config, settings, optimizer, mesh=None):
  """`update.build_step_functions` on `mesh` (default: a mesh of the first device), shardings from the rules."""
  import jax
  from prorl_jax import models, parallel
  from prorl_jax.training import state as state_lib
  from prorl_jax.training import update
  mesh = mesh or parallel.make_mesh(dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
  state = jax.eval_shape(lambda: state_lib.create_train_state(
      models.init_params(model_config, jax.random.key(0)), optimizer, seed=0))
  return update.build_step_functions(model_config, settings, optimizer, mesh=mesh,
                                     state_sharding=parallel.train_state_shardings(model_config, state, optimizer,
                                                                                   mesh))


def tiny_config():
  spec = importlib.util.spec_from_file_location("tiny_config", REPO / "experiments" / "configs" / "tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def small_config(**overrides):
  """tiny.py shrunk to seconds per step: 4 prompts x 4 samples, 12 validation prompts x 2 samples."""
  c = tiny_config()
  c.total_steps = 3
  c.eval_every = 2
  c.checkpoint_every = 1
  c.data.train = "embedded:tiny?size=300"
  c.data.validation = "embedded:tiny?size=12"
  c.rollout.n = 4
  c.batch.prompts = 4
  c.batch.gen_prompts = 8
  c.batch.mini_batch_prompts = 2
  c.eval.num_samples = 2
  c.eval.batch_prompts = 12
  c.checkpoint.export_hf = False
  c.mesh.devices = 1  # tests run with 8 simulated devices; the sharded run is tested on its own
  for dotted, value in overrides.items():
    node = c
    parts = dotted.split(".")
    for part in parts[:-1]:
      node = node[part]
    node[parts[-1]] = value
  return c


def read_rows(workdir) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def without_timing(row: dict) -> dict:
  return {k: v for k, v in row.items() if not k.startswith(TIMING_PREFIXES)}


def teacher_forced_logprobs(config, params, prompts, responses, temperature: float):
  """log p(response token | prefix) `[rows, max response length]` (0 past each response) of the model scoring
  each prompt + response, all rows in one right-padded forward (one compilation, not one per row)."""
  import jax
  import numpy as np
  from prorl_jax import models
  seqs = [list(p) + list(r) for p, r in zip(prompts, responses)]
  width = max(len(s) for s in seqs)
  ids = np.zeros((len(seqs), width), np.int32)
  mask = np.zeros((len(seqs), width), bool)
  for i, s in enumerate(seqs):
    ids[i, :len(s)], mask[i, :len(s)] = s, True
  logp = np.asarray(jax.nn.log_softmax(jax.jit(models.forward, static_argnums=0)(config, params, ids, mask)
                                       / temperature, axis=-1))
  out = np.zeros((len(seqs), max(len(r) for r in responses) or 1), np.float32)
  for i, (p, r) in enumerate(zip(prompts, responses)):
    positions = np.arange(len(p) - 1, len(p) - 1 + len(r))
    out[i, :len(r)] = logp[i, positions, np.asarray(r, np.int64)]
  return out
