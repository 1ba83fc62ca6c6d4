"""Qwen2 in Flax against transformers (torch CPU) as the numerical oracle."""

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hf_fixtures import make_hf_model, torch_logits
from prorl_jax import models

# (name, kwargs): tied and untied heads, GQA ratios 1, 2 and 6, an explicit head_dim.
CONFIGS = [
    ("mha_untied", dict(num_attention_heads=4, num_key_value_heads=4)),
    ("gqa2_tied", dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)),
    ("gqa6_untied", dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=1, rope_theta=5000.0)),
    ("gqa2_head_dim", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_hidden_layers=3)),
]


def _left_padded_batch(vocab, lengths, seed=0):
  rng = np.random.RandomState(seed)
  t = max(lengths)
  ids = rng.randint(2, vocab, size=(len(lengths), t))
  mask = np.zeros((len(lengths), t), np.int32)
  for b, n in enumerate(lengths):
    mask[b, t - n:] = 1
    ids[b, :t - n] = 0
  return ids, mask


@pytest.fixture(scope="module", params=CONFIGS, ids=[c[0] for c in CONFIGS])
def hf_model(request, tmp_path_factory):
  path = tmp_path_factory.mktemp(request.param[0])
  torch_model = make_hf_model(path, **request.param[1])
  config, params = models.load_hf(path)
  return path, torch_model, config, params


@pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])
def test_left_padded_logits_match_transformers(hf_model, use_jit):
  _, torch_model, config, params = hf_model
  ids, mask = _left_padded_batch(config.vocab_size, [13, 5, 9, 1])
  fwd = jax.jit(models.forward) if use_jit else models.forward
  ours = np.asarray(fwd(config, params, ids, mask))
  assert ours.dtype == np.float32
  chex.assert_shape(ours, (4, 13, config.vocab_size))
  worst = 0.0
  for b in range(len(ids)):
    real = mask[b].astype(bool)
    ref = torch_logits(torch_model, ids[b:b + 1, real])[0]
    worst = max(worst, float(np.abs(ours[b, real] - ref).max()))
  assert worst <= 1e-4, worst


def test_right_padding_and_explicit_positions(hf_model):
  _, torch_model, config, params = hf_model
  ids, mask = _left_padded_batch(config.vocab_size, [7, 4], seed=1)
  right_ids = np.stack([np.roll(ids[0], 0), np.roll(ids[1], -3)])
  right_mask = np.stack([mask[0], np.roll(mask[1], -3)])
  ours = np.asarray(models.forward(config, params, right_ids, right_mask))
  ref = torch_logits(torch_model, right_ids[1:, :4])[0]
  np.testing.assert_allclose(ours[1, :4], ref, atol=1e-4)
  # Explicit positions shifted by a constant change nothing (rotary attention is relative).
  shifted = models.forward(config, params, ids[:1], positions=np.arange(7)[None] + 100)
  np.testing.assert_allclose(np.asarray(shifted)[0], torch_logits(torch_model, ids[:1])[0], atol=2e-4)


def test_config_is_static_pytree(hf_model):
  _, _, config, params = hf_model
  ids = np.ones((1, 3), np.int32)
  a = jax.jit(models.forward, static_argnums=0)(config, params, ids)
  b = jax.jit(models.forward)(config, params, ids)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert hash(config) == hash(dataclasses.replace(config))


def test_save_hf_round_trip_loads_in_transformers(hf_model, tmp_path):
  import transformers

  _, torch_model, config, params = hf_model
  out = models.save_hf(config, params, tmp_path / "saved")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
  ids, _ = _left_padded_batch(config.vocab_size, [9], seed=2)
  np.testing.assert_array_equal(torch_logits(reloaded, ids), torch_logits(torch_model, ids))
  config2, params2 = models.load_hf(out)
  assert config2 == config
  chex.assert_trees_all_equal(params2, params)


def test_sharded_checkpoint_with_index(tmp_path):
  torch_model = make_hf_model(tmp_path / "hf", num_hidden_layers=3, max_shard_size="60KB")
  assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
  config, params = models.load_hf(tmp_path / "hf")
  ids, _ = _left_padded_batch(config.vocab_size, [6], seed=3)
  np.testing.assert_allclose(np.asarray(models.forward(config, params, ids)), torch_logits(torch_model, ids),
                             atol=1e-4)
  # Our writer shards too, with an index transformers reads.
  import transformers
  out = models.save_hf(config, params, tmp_path / "ours", max_shard_bytes=60_000)
  index = json.loads((out / "model.safetensors.index.json").read_text())
  assert len(set(index["weight_map"].values())) > 1
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
  np.testing.assert_array_equal(torch_logits(reloaded, ids), torch_logits(torch_model, ids))


def test_bf16_compute_gives_float32_logits_close_to_fp32(tmp_path):
  make_hf_model(tmp_path, dtype="bfloat16")
  config, params16 = models.load_hf(tmp_path, dtype=jnp.bfloat16, compute_dtype=jnp.bfloat16)
  assert config.dtype == "bfloat16"
  assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(params16))
  ids, mask = _left_padded_batch(config.vocab_size, [10, 6], seed=4)
  logits16 = jax.jit(models.forward)(config, params16, ids, mask)
  assert logits16.dtype == jnp.float32
  config32, params32 = models.load_hf(tmp_path, dtype=jnp.float32)
  logits32 = models.forward(config32, params32, ids, mask)
  real = mask.astype(bool)
  err = np.abs(np.asarray(logits16)[real] - np.asarray(logits32)[real])
  scale = np.abs(np.asarray(logits32)[real]).max()
  assert err.max() <= 0.05 * scale, (err.max(), scale)
  assert np.mean(np.argmax(np.asarray(logits16)[real], -1) == np.argmax(np.asarray(logits32)[real], -1)) > 0.9


def test_init_params_matches_layout_and_count():
  config = models.Qwen2Config(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2)
  params = models.init_params(config, jax.random.key(0))
  flat = {"/".join(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
  layout = {"/".join(p) for _, p, _ in models.param_layout(config)}
  assert set(flat) == layout
  assert sum(x.size for x in flat.values()) == config.num_params()
  # The real target's size: Nemotron-Research-Reasoning-Qwen-1.5B has 1.78B parameters (untied head).
  assert abs(models.Qwen2Config().num_params() - 1.777e9) < 1e7


def test_remat_same_logits_and_grads():
  config = models.Qwen2Config(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2)
  params = models.init_params(config, jax.random.key(1))
  ids = jnp.arange(12).reshape(2, 6) % 50

  def loss(p, c):
    return jnp.mean(jax.nn.log_softmax(models.forward(c, p, ids))[..., 0])

  g1 = jax.jit(jax.grad(loss), static_argnums=1)(params, config)
  g2 = jax.jit(jax.grad(loss), static_argnums=1)(params, config.replace(remat=True))
  chex.assert_trees_all_close(g1, g2, atol=1e-6)
