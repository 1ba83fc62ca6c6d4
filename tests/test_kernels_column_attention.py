"""kernels.column_attention: the native column-cache decode attention against the rows-layout reference."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import cpu_native
from kernels.column_attention import column_attention, column_attention_reference
from kernels.decode_attention_reference import decode_attention_reference


def _case(seed, batch, max_len, kv_heads, group, head_dim, lengths, scale=1.0):
  rng = np.random.RandomState(seed)
  q = (scale * rng.normal(size=(batch, kv_heads * group, head_dim))).astype(np.float32)
  k = rng.normal(size=(batch, max_len, kv_heads, head_dim)).astype(np.float32)
  v = rng.normal(size=(batch, max_len, kv_heads, head_dim)).astype(np.float32)
  cols_k = np.ascontiguousarray(np.transpose(k, (0, 2, 3, 1)))  # [B, Hkv, D, S]
  cols_v = np.ascontiguousarray(np.transpose(v, (0, 2, 1, 3)))  # [B, Hkv, S, D]
  return q, k, v, cols_k, cols_v, np.asarray(lengths, np.int32)


@pytest.mark.parametrize("group,head_dim", [(1, 64), (4, 64), (7, 128), (16, 16), (2, 48)])
@pytest.mark.parametrize("jit", [False, True])
def test_matches_rows_reference(group, head_dim, jit):
  max_len = 45  # not a multiple of the kernel's 16 positions
  lengths = [0, 1, 15, 16, 17, 32, max_len, max_len + 3, -2]
  q, k, v, ck, cv, lengths = _case(group * head_dim, len(lengths), max_len, 2, group, head_dim, lengths)
  fn = jax.jit(column_attention) if jit else column_attention
  got = fn(q, ck, cv, lengths)
  chex.assert_shape(got, q.shape)
  want = decode_attention_reference(q, k, v, np.clip(lengths, 0, None))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=2e-6)
  assert not np.asarray(got)[[0, -1]].any()  # length 0 (and below) gives zeros


def test_large_logits_stay_finite():
  # Logits in the hundreds: the softmax must subtract the row maximum before exponentiating.
  q, k, v, ck, cv, lengths = _case(1, 3, 70, 1, 4, 64, [70, 33, 2], scale=40.0)
  got = np.asarray(column_attention(q, ck, cv, lengths))
  assert np.isfinite(got).all()
  np.testing.assert_allclose(got, np.asarray(decode_attention_reference(q, k, v, lengths)), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not cpu_native.available(), reason=cpu_native.native_status())
def test_reads_nothing_past_each_rows_length():
  # NaN in every cached position at or past a row's length: XLA's masked reference multiplies them by zero (NaN);
  # the kernel never loads them.
  lengths = [5, 16, 1, 40]
  q, k, v, ck, cv, lengths = _case(2, 4, 40, 2, 4, 64, lengths)
  want = np.asarray(decode_attention_reference(q, k, v, lengths))
  for row, n in enumerate(lengths):
    ck[row, :, :, n:] = np.nan
    cv[row, :, n:] = np.nan
  got = np.asarray(jax.jit(column_attention)(q, ck, cv, lengths))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
  assert np.isnan(np.asarray(column_attention_reference(q, ck, cv, lengths))).any()


@pytest.mark.parametrize("dtype,head_dim", [(jnp.bfloat16, 64), (jnp.float32, 40)])
def test_other_inputs_run_the_reference(dtype, head_dim):
  q, _, _, ck, cv, lengths = _case(3, 2, 20, 1, 2, head_dim, [20, 7])
  q, ck, cv = (jnp.asarray(x, dtype) for x in (q, ck, cv))
  assert "prorl_column_attention" not in jax.jit(column_attention).lower(q, ck, cv, lengths).as_text()
  chex.assert_trees_all_close(column_attention(q, ck, cv, lengths), column_attention_reference(q, ck, cv, lengths))


@pytest.mark.parametrize("platform_name", ["cuda", "tpu"])
def test_accelerator_lowering_uses_the_reference(platform_name):
  q, _, _, ck, cv, lengths = _case(4, 2, 32, 2, 4, 64, [3, 32])
  text = jax.jit(column_attention).trace(q, ck, cv, lengths).lower(lowering_platforms=(platform_name,)).as_text()
  assert "prorl_column_attention" not in text


def test_bad_shapes_name_the_layouts():
  with pytest.raises(ValueError, match=r"keys \[B, Hkv, D, S\]"):
    column_attention(jnp.ones((2, 4, 16)), jnp.ones((2, 2, 16, 8)), jnp.ones((2, 2, 16, 8)), jnp.ones((2,), jnp.int32))
