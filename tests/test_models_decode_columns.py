"""The CPU column-layout decode step equals the row-layout one (and so the full forward); its attention equals the
kernel's jnp reference; its cache layout round-trips."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.column_attention import column_attention
from kernels.decode_attention_reference import decode_attention_reference
from prorl_jax import models
from prorl_jax.models import decode_columns


def _config(**kw):
  base = dict(vocab_size=97, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=6,
              num_key_value_heads=2, initializer_range=0.2)
  base.update(kw)
  return models.Qwen2Config(**base)


def _prefilled(config, params, seqs, lengths, cache_len):
  ids = np.where(np.arange(lengths.max())[None] < lengths[:, None], seqs[:, :lengths.max()], 0)
  cache = models.init_cache(config, len(seqs), cache_len)
  return models.prefill(config, params, ids, lengths, cache)[1]


@pytest.mark.parametrize("tied,kv_heads", [(True, 2), (False, 2), (True, 6), (False, 1)])
def test_column_steps_equal_row_steps_and_the_full_forward(tied, kv_heads):
  config = _config(tie_word_embeddings=tied, num_key_value_heads=kv_heads)
  params = models.init_params(config, jax.random.key(0))
  rng = np.random.RandomState(0)
  lengths = np.array([5, 1, 8])
  total = 13
  seqs = rng.randint(0, config.vocab_size, size=(3, total))
  full = np.asarray(models.forward(config, params, seqs))
  rows_cache = _prefilled(config, params, seqs, lengths, total + 3)
  cols_cache = decode_columns.to_column_cache(config, rows_cache)
  weights = decode_columns.column_weights(config, params)
  row_step = jax.jit(models.decode_step, static_argnums=0)
  col_step = jax.jit(decode_columns.decode_step_columns, static_argnums=0)
  positions = lengths.copy()
  for _ in range(total - lengths.max()):
    tokens = seqs[np.arange(3), positions]
    want, rows_cache = row_step(config, params, tokens, positions, rows_cache)
    got, cols_cache = col_step(config, weights, tokens, positions, cols_cache)
    chex.assert_shape(got, (config.vocab_size, 3))  # vocabulary-major
    np.testing.assert_allclose(np.asarray(got).T, np.asarray(want), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got).T, full[np.arange(3), positions], atol=1e-4)
    positions = positions + 1
  chex.assert_trees_all_close(decode_columns.from_column_cache(cols_cache), rows_cache, atol=1e-5)


def test_inactive_rows_attend_to_nothing_and_active_rows_are_unaffected():
  config = _config()
  params = models.init_params(config, jax.random.key(1))
  seqs = np.random.RandomState(1).randint(0, config.vocab_size, size=(2, 6))
  full = np.asarray(models.forward(config, params, seqs))
  cache = decode_columns.to_column_cache(config, _prefilled(config, params, seqs, np.array([3, 3]), 8))
  logits, _ = decode_columns.decode_step_columns(config, decode_columns.column_weights(config, params), seqs[:, 3],
                                         np.array([3, 3]), cache, active=np.array([True, False]))
  np.testing.assert_allclose(np.asarray(logits)[:, 0], full[0, 3], atol=1e-4)
  assert np.isfinite(np.asarray(logits)).all()


def test_bf16_column_step_close_to_row_step():
  config = _config(dtype="bfloat16")
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), models.init_params(config, jax.random.key(2)))
  seqs = np.random.RandomState(2).randint(0, config.vocab_size, size=(2, 6))
  rows_cache = _prefilled(config, params, seqs, np.array([4, 2]), 8)
  positions = np.array([4, 2])
  want, _ = models.decode_step(config, params, seqs[np.arange(2), positions], positions, rows_cache)
  got, cache = decode_columns.decode_step_columns(config, decode_columns.column_weights(config, params),
                                          seqs[np.arange(2), positions], positions,
                                          decode_columns.to_column_cache(config, rows_cache))
  assert cache.keys[0].dtype == jnp.bfloat16 and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got).T, np.asarray(want), atol=0.1)


@pytest.mark.parametrize("group", [1, 3, 8])
def test_column_attention_equals_the_reference(group):
  rng = np.random.RandomState(group)
  batch, max_len, kv_heads, head_dim = 5, 37, 2, 16
  q = rng.normal(size=(batch, kv_heads * group, head_dim)).astype(np.float32)
  k = rng.normal(size=(batch, max_len, kv_heads, head_dim)).astype(np.float32)
  v = rng.normal(size=(batch, max_len, kv_heads, head_dim)).astype(np.float32)
  lengths = np.array([0, 1, 17, max_len, max_len + 4], np.int32)  # empty, one, ragged, full, past the end
  config = _config(num_attention_heads=kv_heads * group, num_key_value_heads=kv_heads, hidden_size=kv_heads * group * head_dim)
  merged = lambda x: jnp.asarray(x.reshape(batch, max_len, kv_heads * head_dim))  # the model's cache layout
  cols = decode_columns.to_column_cache(config, models.KVCache((merged(k),), (merged(v),)))
  got = jax.jit(column_attention)(q, cols.keys[0], cols.values[0], lengths)
  want = decode_attention_reference(q, k, v, lengths)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
  assert not np.asarray(got)[0].any()  # a length-0 row gives zeros


def test_column_cache_round_trips_exactly():
  rng = np.random.RandomState(3)
  config = _config(num_attention_heads=3, num_key_value_heads=3, hidden_size=12)  # head_dim 4
  cache = models.KVCache(tuple(jnp.asarray(rng.normal(size=(2, 7, 12)), jnp.float32) for _ in range(2)),
                         tuple(jnp.asarray(rng.normal(size=(2, 7, 12)), jnp.float32) for _ in range(2)))
  cols = decode_columns.to_column_cache(config, cache)
  chex.assert_shape(cols.keys, [(2, 3, 4, 7)] * 2)
  chex.assert_shape(cols.values, [(2, 3, 7, 4)] * 2)
  chex.assert_trees_all_equal(decode_columns.from_column_cache(cols), cache)


def test_decode_windows_split_the_generated_span():
  assert decode_columns.decode_windows(64, 192) == (96, 128, 160, 192)
  assert decode_columns.decode_windows(512, 8704) == (2560, 4608, 6656, 8704)  # at most four phases
  assert decode_columns.decode_windows(32, 48) == (48,)  # under two phases' worth: one loop over the whole cache
  assert decode_columns.decode_windows(0, 5) == (5,)
  for filled, cache_len in [(7, 200), (1, 129), (100, 101), (33, 1000)]:
    windows = decode_columns.decode_windows(filled, cache_len)
    assert windows[-1] == cache_len and windows[0] > filled and list(windows) == sorted(set(windows))
  with pytest.raises(ValueError, match="filled"):
    decode_columns.decode_windows(10, 10)


def test_grow_column_cache_pads_positions_with_zeros():
  rng = np.random.RandomState(4)
  config = _config(num_attention_heads=3, num_key_value_heads=3, hidden_size=12, num_hidden_layers=1)
  cache = models.KVCache((jnp.asarray(rng.normal(size=(2, 9, 12)), jnp.float32),),
                         (jnp.asarray(rng.normal(size=(2, 9, 12)), jnp.float32),))
  short = decode_columns.to_column_cache(config, cache, 5)
  chex.assert_shape((short.keys[0], short.values[0]), [(2, 3, 4, 5), (2, 3, 5, 4)])
  grown = decode_columns.from_column_cache(decode_columns.grow_column_cache(short, 9))
  np.testing.assert_array_equal(np.asarray(grown.keys[0][:, :5]), np.asarray(cache.keys[0][:, :5]))
  np.testing.assert_array_equal(np.asarray(grown.values[0][:, :5]), np.asarray(cache.values[0][:, :5]))
  assert not np.asarray(grown.keys[0][:, 5:]).any() and not np.asarray(grown.values[0][:, 5:]).any()
