"""The sampler on a device mesh gives the same tokens as on one device; the Pallas kernel runs per shard."""

import importlib

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from prorl_jax import models, parallel, rollout

# The module (kernels/__init__.py re-exports a function of the same name).
decode_attention_module = importlib.import_module("kernels.decode_attention")

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [3, 4], [20, 21, 22, 23, 24], [9], [40, 41, 42]]


def _config(**kw):
  base = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, initializer_range=0.3)
  return models.Qwen2Config(**dict(base, **kw))


@pytest.fixture(scope="module")
def setup():
  config = _config()
  params = models.init_params(config, jax.random.key(0))
  greedy = dict(max_new_tokens=10, sampling=rollout.SamplingParams(temperature=0), eos_token_ids=[], num_samples=3)
  return config, params, greedy, rollout.Sampler(config).generate(params, PROMPTS, **greedy)


@pytest.mark.parametrize("sizes", [dict(data=2, fsdp=2, tensor=2), dict(data=1, fsdp=2, tensor=4)])
def test_sharded_greedy_tokens_equal_unsharded(setup, sizes):
  config, params, greedy, want = setup
  sampler = rollout.Sampler(config, mesh=parallel.make_mesh(sizes))
  got = sampler.generate(params, PROMPTS, **greedy)
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_array_equal(got.lengths, want.lengths)
  np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-4)
  # 5 prompts x 3 samples = 15 rows, padded with dead prompts to whole rows per shard.
  shards = sizes["data"] * sizes["fsdp"]
  assert got.stats["rows_per_chunk"] % shards == 0 and got.stats["rows_per_chunk"] >= 15


def test_sampling_with_eos_and_temperature_is_mesh_independent(setup):
  config, params, _, _ = setup
  kw = dict(max_new_tokens=12, sampling=rollout.SamplingParams(temperature=1.0, top_p=0.9), num_samples=2, seed=3)
  free = rollout.Sampler(config).generate(params, PROMPTS, eos_token_ids=[], **kw).tokens
  # An EOS id that some sampled rows (not all) produce, so rows stop at different steps.
  kw["eos_token_ids"] = [next(int(t) for t in np.unique(free) if 0 < (free == t).any(axis=1).sum() < len(free))]
  want = rollout.Sampler(config).generate(params, PROMPTS, **kw)
  # A rollout-style 1-D mesh with only a "data" axis (as benchmarks/rollout.py builds), Explicit axis types.
  mesh = jax.make_mesh((4,), ("data",), devices=jax.devices()[:4])
  got = rollout.Sampler(config, mesh=mesh, max_rows_per_chunk=4).generate(params, PROMPTS, **kw)
  assert got.stats["chunks"] > 1
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_array_equal(got.finished_by_eos, want.finished_by_eos)
  assert want.finished_by_eos.any() and not want.finished_by_eos.all()


def test_pallas_decode_attention_runs_per_shard(setup, monkeypatch):
  config, params, greedy, want = setup
  config = config.replace(attention_impl="pallas")  # interpret mode on CPU
  seen = []
  real = decode_attention_module.decode_attention

  def spy(q, k_cache, v_cache, lengths, **kw):
    seen.append((q.shape, k_cache.shape))
    return real(q, k_cache, v_cache, lengths, **kw)

  monkeypatch.setattr(decode_attention_module, "decode_attention", spy)
  mesh = parallel.make_mesh(dict(data=2, fsdp=2, tensor=2))
  got = rollout.Sampler(config, mesh=mesh).generate(params, PROMPTS, **greedy)
  np.testing.assert_array_equal(got.tokens, want.tokens)
  rows = got.stats["rows_per_chunk"]
  # Inside shard_map each kernel call sees its shard: rows / (data x fsdp), kv heads / tensor, q heads / tensor.
  assert seen and all(q == (rows // 4, 2, 16) and k[0] == rows // 4 and k[2] == 1 for q, k in seen), seen


def test_reference_attention_is_left_to_xla(setup, monkeypatch):
  config, params, greedy, want = setup
  seen = []
  real = decode_attention_module.decode_attention
  monkeypatch.setattr(decode_attention_module, "decode_attention",
                      lambda q, *a, **kw: (seen.append(q.shape), real(q, *a, **kw))[1])
  mesh = Mesh(np.asarray(jax.devices()[:2]), ("data",))
  got = rollout.Sampler(config.replace(attention_impl="reference"), mesh=mesh).generate(params, PROMPTS, **greedy)
  np.testing.assert_array_equal(got.tokens, want.tokens)
  assert seen and all(s[0] == got.stats["rows_per_chunk"] for s in seen)  # global shapes: GSPMD partitions it


def test_params_and_cache_layout(setup):
  config, params, _, _ = setup
  mesh = parallel.make_mesh(dict(data=2, fsdp=2, tensor=2))
  sampler = rollout.Sampler(config, mesh=mesh)
  shardings = sampler._param_shardings(params)
  # Sampling rules: tensor parallel only, replicated over fsdp (no per-token all-gather of the weights).
  assert shardings["layers_0"]["mlp"]["gate_proj"]["kernel"].spec == jax.sharding.PartitionSpec(None, "tensor")
  assert parallel.kv_cache_spec(config, 12, 32, mesh) == jax.sharding.PartitionSpec(("data", "fsdp"), None, "tensor")
  # Two kv heads do not split over tensor=4: replicated heads, rows still split.
  mesh4 = parallel.make_mesh(dict(data=1, fsdp=2, tensor=4))
  assert parallel.kv_cache_spec(config, 12, 32, mesh4) == jax.sharding.PartitionSpec("fsdp")
