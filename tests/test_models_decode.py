"""The cached path (prefill, then one token at a time) equals the full forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prorl_jax import models


def _config(**kw):
  base = dict(vocab_size=97, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=6,
              num_key_value_heads=2, initializer_range=0.2)
  base.update(kw)
  return models.Qwen2Config(**base)


@pytest.mark.parametrize("kv_heads", [6, 2, 1])
def test_prefill_then_decode_equals_full_forward(kv_heads):
  config = _config(num_key_value_heads=kv_heads)
  params = models.init_params(config, jax.random.key(0))
  rng = np.random.RandomState(0)
  lengths = np.array([5, 1, 8])
  total = 14  # prompt + decoded tokens per row
  seqs = rng.randint(0, config.vocab_size, size=(3, total))
  full = np.asarray(models.forward(config, params, seqs))
  prompt_len = lengths.max()
  ids = np.where(np.arange(prompt_len)[None] < lengths[:, None], seqs[:, :prompt_len], 0)
  cache = models.init_cache(config, 3, total + 2)
  logits, cache = jax.jit(models.prefill)(config, params, ids, lengths, cache)
  np.testing.assert_allclose(np.asarray(logits), full[np.arange(3), lengths - 1], atol=1e-4)
  step = jax.jit(models.decode_step)
  positions = lengths.copy()
  for _ in range(total - lengths.max()):
    tokens = seqs[np.arange(3), positions]
    logits, cache = step(config, params, tokens, positions, cache)
    np.testing.assert_allclose(np.asarray(logits), full[np.arange(3), positions], atol=1e-4)
    positions = positions + 1


def test_inactive_rows_keep_their_cache_and_others_are_unaffected():
  config = _config()
  params = models.init_params(config, jax.random.key(1))
  seqs = np.random.RandomState(1).randint(0, config.vocab_size, size=(2, 6))
  full = np.asarray(models.forward(config, params, seqs))
  cache = models.init_cache(config, 2, 8)
  _, cache = models.prefill(config, params, seqs[:, :3], np.array([3, 3]), cache)
  active = np.array([True, False])
  logits, cache2 = models.decode_step(config, params, seqs[:, 3], np.array([3, 3]), cache, active=active)
  np.testing.assert_allclose(np.asarray(logits)[0], full[0, 3], atol=1e-4)
  assert np.isfinite(np.asarray(logits)).all()


def test_bf16_decode_close_to_fp32():
  config = _config()
  params = models.init_params(config, jax.random.key(2))
  seqs = np.random.RandomState(2).randint(0, config.vocab_size, size=(2, 6))
  c16 = config.replace(dtype="bfloat16")
  p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  cache = models.init_cache(c16, 2, 8)
  assert cache.keys[0].dtype == jnp.bfloat16
  _, cache = models.prefill(c16, p16, seqs[:, :4], np.array([4, 4]), cache)
  logits, _ = models.decode_step(c16, p16, seqs[:, 4], np.array([4, 4]), cache)
  assert logits.dtype == jnp.float32
  full = np.asarray(models.forward(config, params, seqs))
  err = np.abs(np.asarray(logits) - full[:, 4]).max()
  assert err < 0.05 * np.abs(full[:, 4]).max(), err
