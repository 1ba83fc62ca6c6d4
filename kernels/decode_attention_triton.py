"""Split-K (flash-decoding) GQA decode attention as a Pallas kernel for GPUs, lowered through Triton.

One program per (row, kv head, split). A program walks its split of the cache in `block_k` blocks with an online
softmax (FlashAttention-2, Dao 2023) and writes the un-normalised partial output and its (max, sum) statistics; the
caller merges the splits (Dao et al., "Flash-Decoding", 2023). The loop bound comes from the row's length, so blocks
past it are never loaded and cost no FLOPs, and a split wholly past it exits at once.

Ideas follow `jax.experimental.pallas.ops.gpu.decode_attention` (deprecated, not imported), but the cache is read
in place in its `[batch, max_len, kv_heads, head_dim]` layout (no transposed copy), `max_len` need not divide into
blocks (loads are masked by the length), and length-0 rows read no cache entries.
"""

from __future__ import annotations

import functools

import jax
from jax import lax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

# Finite, so that exp(mask - max) is exactly 0 and an all-masked row never produces inf - inf.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def split_block_count(length: jax.Array, split: jax.Array, split_len: int, block_k: int) -> jax.Array:
  """Blocks of `block_k` positions that split `split` (covering `[split*split_len, (split+1)*split_len)`) must
  visit for a row of `length` valid positions: 0 when the split starts at or past the length."""
  start = split * split_len
  stop = jnp.minimum(start + split_len, length)
  return pl.cdiv(jnp.maximum(stop - start, 0), block_k)


def _kernel(len_ref, q_ref, k_ref, v_ref, o_ref, m_ref, l_ref, *, sm_scale: float, block_k: int, split_len: int,
            head_dim: int, group: int):
  """q_ref `[block_h, D]`; k_ref/v_ref `[max_len, D]` (this row and kv head, strided); outputs one split.

  The q, o, m and l blocks have `block_h >= group` rows (Triton tiles are powers of 2 and `tl.dot` needs 16) but
  the arrays only `group`: the extra rows are masked on load and store, so they are never read or written.
  """
  split = pl.program_id(2)
  length = len_ref[()]
  start = split * split_len
  stop = jnp.minimum(start + split_len, length)
  num_blocks = split_block_count(length, split, split_len, block_k)

  block_h = q_ref.shape[0]
  row_mask = jnp.arange(block_h, dtype=jnp.int32) < group  # [block_h]
  q = plgpu.load(q_ref, mask=jnp.broadcast_to(row_mask[:, None], (block_h, head_dim)), other=0.0)
  f32 = q.dtype == jnp.float32
  # fp32 caches get IEEE fp32 dots (no TF32) so the kernel agrees with an fp32 reference.
  precision = lax.Precision.HIGHEST if f32 else None
  offsets = jnp.arange(block_k, dtype=jnp.int32)

  def body(i, carry):
    acc, m_prev, l_prev = carry
    first = start + i * block_k
    valid = first + offsets < stop  # [block_k]
    tile_mask = jnp.broadcast_to(valid[:, None], (block_k, head_dim))
    window = pl.ds(pl.multiple_of(first, block_k), block_k)
    # Masked loads: positions past the length are never read (and read as 0), so `max_len` need not be a
    # multiple of `block_k` and stale or NaN cache entries cannot leak in.
    k = plgpu.load(k_ref.at[window, :], mask=tile_mask, other=0.0)
    s = lax.dot_general(q, k, (((1,), (1,)), ((), ())), precision=precision,
                        preferred_element_type=jnp.float32) * sm_scale  # [block_h, block_k]
    s = jnp.where(valid[None, :], s, MASK_VALUE)
    m_next = jnp.maximum(m_prev, s.max(axis=1))
    alpha = jnp.exp(m_prev - m_next)
    p = jnp.exp(s - m_next[:, None])
    l_next = alpha * l_prev + p.sum(axis=1)
    v = plgpu.load(v_ref.at[window, :], mask=tile_mask, other=0.0)
    pv = lax.dot_general(p.astype(v.dtype), v, (((1,), (0,)), ((), ())), precision=precision,
                         preferred_element_type=jnp.float32)
    return alpha[:, None] * acc + pv, m_next, l_next

  init = (jnp.zeros((block_h, head_dim), jnp.float32), jnp.full((block_h,), MASK_VALUE, jnp.float32),
          jnp.zeros((block_h,), jnp.float32))
  acc, m, l = lax.fori_loop(0, num_blocks, body, init)
  plgpu.store(o_ref, acc, mask=jnp.broadcast_to(row_mask[:, None], (block_h, head_dim)))
  plgpu.store(m_ref, m, mask=row_mask)
  plgpu.store(l_ref, l, mask=row_mask)


@functools.partial(jax.jit, static_argnames=("sm_scale", "block_k", "num_splits", "block_h", "num_warps",
                                             "num_stages", "interpret"))
def decode_partials_triton(q: jax.Array, k: jax.Array, v: jax.Array, lengths: jax.Array, *, sm_scale: float,
                           block_k: int, num_splits: int, block_h: int, num_warps: int = 4, num_stages: int = 2,
                           interpret: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-split flash-decoding partials.

  Args:
    q: `[batch, kv_heads, group, head_dim]`, the query heads of each kv head's group; same dtype as the cache.
    k, v: `[batch, max_len, kv_heads, head_dim]` caches.
    lengths: int32 `[batch]` in `[0, max_len]`.
    sm_scale: softmax scale applied to q·k.
    block_k: cache positions per loop step (power of 2, >= 16).
    num_splits: splits of the cache length, one program each.
    block_h: q rows per program: a power of 2 >= max(group, 16).

  Returns:
    (acc `[batch, kv_heads, num_splits, group, head_dim]` f32 un-normalised output, m
    `[batch, kv_heads, num_splits, group]` f32 running max, l (same shape) f32 softmax denominator).
  """
  batch, max_len, kv_heads, head_dim = k.shape
  group = q.shape[2]
  num_blocks = pl.cdiv(max_len, block_k)
  split_len = block_k * pl.cdiv(num_blocks, num_splits)
  # A free reshape: the kv heads of one position are contiguous, so head h is the column block h.
  k2 = k.reshape(batch, max_len, kv_heads * head_dim)
  v2 = v.reshape(batch, max_len, kv_heads * head_dim)
  kernel = functools.partial(_kernel, sm_scale=sm_scale, block_k=block_k, split_len=split_len,
                             head_dim=head_dim, group=group)
  kv_spec = pl.BlockSpec((None, max_len, head_dim), lambda b, h, s: (b, 0, h))
  stat_spec = pl.BlockSpec((None, None, None, block_h), lambda b, h, s: (b, h, s, 0))
  itemsize = k.dtype.itemsize
  cost = pl.CostEstimate(
      flops=4 * batch * kv_heads * block_h * max_len * head_dim,
      transcendentals=batch * kv_heads * block_h * max_len,
      bytes_accessed=2 * k.size * itemsize + q.size * itemsize + 4 * batch * kv_heads * num_splits * group * (
          head_dim + 2))
  return pl.pallas_call(
      kernel,
      grid=(batch, kv_heads, num_splits),
      in_specs=[
          pl.BlockSpec((None,), lambda b, h, s: (b,)),
          pl.BlockSpec((None, None, block_h, head_dim), lambda b, h, s: (b, h, 0, 0)),
          kv_spec,
          kv_spec,
      ],
      out_specs=[
          pl.BlockSpec((None, None, None, block_h, head_dim), lambda b, h, s: (b, h, s, 0, 0)),
          stat_spec,
          stat_spec,
      ],
      out_shape=[
          jax.ShapeDtypeStruct((batch, kv_heads, num_splits, group, head_dim), jnp.float32),
          jax.ShapeDtypeStruct((batch, kv_heads, num_splits, group), jnp.float32),
          jax.ShapeDtypeStruct((batch, kv_heads, num_splits, group), jnp.float32),
      ],
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      cost_estimate=cost,
      interpret=interpret,
      name="decode_attention_triton",
  )(lengths, q, k2, v2)
