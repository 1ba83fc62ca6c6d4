"""Plain-jnp decode attention: masked dense grouped-query attention over a KV cache.

The oracle the Pallas kernels are checked against, and the fast path where no kernel lowers (CPU). It reads the whole
cache whatever the row lengths; the kernels read only the valid prefix of each row.
"""

from __future__ import annotations

import jax
from jax import lax
import jax.numpy as jnp


def decode_attention_reference(q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, lengths: jax.Array, *,
                               sm_scale: float | None = None) -> jax.Array:
  """softmax(q·Kᵀ · sm_scale) · V over cache positions `[0, lengths[b])` of each row (Vaswani et al. 2017, with
  grouped-query heads, Ainslie et al. 2023).

  Args:
    q: `[batch, num_q_heads, head_dim]`, one new token per row; query head `h` reads kv head `h // group`.
    k_cache, v_cache: `[batch, max_len, num_kv_heads, head_dim]`; `num_q_heads % num_kv_heads == 0`.
    lengths: int `[batch]`; clamped to `[0, max_len]`. A length-0 row returns zeros.
    sm_scale: logit scale, default `head_dim ** -0.5`.

  Returns:
    `[batch, num_q_heads, head_dim]` in q's dtype. q is cast to the cache dtype; logits, softmax and accumulation
    are fp32 (fp32 caches use full-precision matmuls); with 16-bit caches the probabilities are rounded to the
    cache dtype before the PV matmul, as in FlashAttention. Cache entries past a row's length must be finite (they
    are in a zero-initialised cache): the dense PV matmul multiplies them by exactly 0.
  """
  batch, num_q_heads, head_dim = q.shape
  _, max_len, num_kv_heads, _ = k_cache.shape
  group = num_q_heads // num_kv_heads
  if sm_scale is None:
    sm_scale = head_dim ** -0.5
  dtype = k_cache.dtype
  precision = lax.Precision.HIGHEST if dtype == jnp.float32 else None
  lengths = jnp.clip(lengths.astype(jnp.int32), 0, max_len)
  qg = q.astype(dtype).reshape(batch, num_kv_heads, group, head_dim)
  logits = jnp.einsum("bkgd,bskd->bkgs", qg, k_cache, precision=precision,
                      preferred_element_type=jnp.float32) * sm_scale
  valid = jnp.arange(max_len, dtype=jnp.int32)[None, :] < lengths[:, None]  # [batch, max_len]
  logits = jnp.where(valid[:, None, None, :], logits, -jnp.inf)
  m = jnp.max(logits, axis=-1, keepdims=True)
  m = jnp.where(jnp.isfinite(m), m, 0.0)  # Empty rows: exp(-inf - 0) = 0, no inf - inf.
  p = jnp.exp(logits - m)
  denom = jnp.sum(p, axis=-1, keepdims=True)
  out = jnp.einsum("bkgs,bskd->bkgd", p.astype(v_cache.dtype), v_cache, precision=precision,
                   preferred_element_type=jnp.float32)
  out = out / jnp.where(denom == 0.0, 1.0, denom)
  return out.reshape(batch, num_q_heads, head_dim).astype(q.dtype)
