"""`column_attention`: one decode step of grouped-query attention over a column-layout KV cache, on CPU natively.

The column cache (`prorl_jax.models.decode_columns`) stores keys `[B, Hkv, D, S]` and values `[B, Hkv, S, D]`, the
layouts of plain `[G, D] x [D, S]` and `[G, S] x [S, D]` products. The XLA reference reads every cached position
and masks the tail; the native kernel (`cpu_decode.cc`, built by `kernels.cpu_native`) reads only each row's valid
prefix, 16 positions per vector, computes the softmax in registers (a polynomial exp) and splits (row, kv head) pairs
over XLA's intra-op thread pool.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kernels import cpu_native
from kernels.decode_attention_select import target_platform

MAX_GROUP = 16  # query heads per kv head the native kernel takes


def column_attention_reference(q: jax.Array, keys: jax.Array, values: jax.Array, lengths: jax.Array) -> jax.Array:
  """`kernels.decode_attention_reference` on the column layout: q `[B, Hq, D]`, keys `[B, Hkv, D, S]`, values
  `[B, Hkv, S, D]`, lengths `[B]` -> `[B, Hq, D]` in q's dtype (fp32 logits and softmax; a length-0 row gives 0)."""
  batch, num_q_heads, head_dim = q.shape
  _, num_kv_heads, _, max_len = keys.shape
  dtype = keys.dtype
  # XLA:CPU computes fp32 dots in full precision either way, and its HIGHEST path is ~25% slower on these tiny
  # batched products; elsewhere (a forced columns layout on an accelerator) fp32 must not drop to TF32 / bf16.
  exact = dtype == jnp.float32 and target_platform() != "cpu"
  precision = jax.lax.Precision.HIGHEST if exact else None
  qg = q.astype(dtype).reshape(batch, num_kv_heads, num_q_heads // num_kv_heads, head_dim)
  logits = jnp.einsum("bkgd,bkds->bkgs", qg, keys, precision=precision,
                      preferred_element_type=jnp.float32) * head_dim ** -0.5
  valid = jnp.arange(max_len, dtype=jnp.int32)[None, :] < jnp.clip(lengths, 0, max_len)[:, None]
  logits = jnp.where(valid[:, None, None, :], logits, -jnp.inf)
  m = jnp.max(logits, axis=-1, keepdims=True)
  p = jnp.exp(logits - jnp.where(jnp.isfinite(m), m, 0.0))
  denom = jnp.sum(p, axis=-1, keepdims=True)
  out = jnp.einsum("bkgs,bksd->bkgd", p.astype(dtype), values, precision=precision,
                   preferred_element_type=jnp.float32)
  out = out / jnp.where(denom == 0.0, 1.0, denom)
  return out.reshape(batch, num_q_heads, head_dim).astype(q.dtype)


def _native(q, keys, values, lengths):
  call = jax.ffi.ffi_call(cpu_native.ATTENTION_TARGET, jax.ShapeDtypeStruct(q.shape, jnp.float32))
  return call(q, keys, values, lengths.astype(jnp.int32), scale=np.float32(q.shape[-1] ** -0.5))


def column_attention(q: jax.Array, keys: jax.Array, values: jax.Array, lengths: jax.Array) -> jax.Array:
  """Attention of q `[B, Hq, D]` over positions `[0, lengths[b])` of keys `[B, Hkv, D, S]` / values `[B, Hkv, S, D]`
  -> `[B, Hq, D]` (Vaswani et al. 2017 with grouped-query heads, Ainslie et al. 2023; a length-0 row gives 0).

  Float32 inputs with D a multiple of 16 and at most `MAX_GROUP` query heads per kv head run the native kernel on
  CPU when it is available (results agree with the reference to ~1e-6); everything else, and every other platform
  a program is lowered for, runs `column_attention_reference`.
  """
  b, hq, d = q.shape
  if keys.ndim != 4 or values.shape != (b, keys.shape[1], keys.shape[3], d) or keys.shape[:3] != (b, keys.shape[1], d):
    raise ValueError(f"column_attention needs q [B, Hq, D], keys [B, Hkv, D, S], values [B, Hkv, S, D]; got "
                     f"{q.shape}, {keys.shape}, {values.shape}")
  hkv = keys.shape[1]
  eligible = (q.dtype == keys.dtype == values.dtype == jnp.float32 and d % 16 == 0 and hkv and hq % hkv == 0
              and hq // hkv <= MAX_GROUP and b and keys.shape[3])
  if not eligible or not cpu_native.available():
    return column_attention_reference(q, keys, values, lengths)
  return jax.lax.platform_dependent(q, keys, values, lengths, cpu=_native, default=column_attention_reference)
