"""Split-K (flash-decoding) GQA decode attention as a Pallas kernel for TPUs, lowered through Mosaic.

Grid `(batch, head_block, split, block)`; the last axis walks one split of the cache in `block_k` blocks with an
online softmax (FlashAttention-2, Dao 2023) held in VMEM scratch, and the caller merges the splits (Flash-Decoding,
Dao et al. 2023). The row lengths are scalar-prefetched into SMEM so that

* the K/V index maps clamp every block past a row's length to the row's last valid block: Pallas only issues a DMA
  when a block index changes, so skipped blocks are never fetched (a length-0 row re-uses the previous row's block
  and fetches nothing at all), and
* `pl.when` skips their compute.

Mosaic wants the last two block dims divisible by (8, 128) or equal to the array's. The cache is viewed (for free)
as `[batch, max_len, kv_heads * head_dim]` and a block spans `heads_per_block` kv heads, chosen so its width is a
multiple of 128 lanes or the whole row. When a block holds more than one kv head, q arrives as a block-diagonal
matrix (each head's query group in its own column band), so both matmuls stay plain 2-D MXU matmuls and the caller
reads each head's output off the diagonal; the extra MXU work is free in this memory-bound kernel.
"""

from __future__ import annotations

import functools

import jax
from jax import lax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
# m and l live lane-replicated in a [rows, 128] tile, as in jax's TPU flash attention.
_LANES = 128


def last_valid_block(length: jax.Array, block_k: int) -> jax.Array:
  """Index of the last block holding a valid position (0 for an empty row)."""
  return jnp.maximum(pl.cdiv(length, block_k) - 1, 0)


def kv_block_index(b, hb, s, j, lengths_ref, src_ref, *, blocks_per_split: int, block_k: int, num_head_blocks: int):
  """K/V index map: `(row, position block, head block)` to fetch at grid point `(b, hb, s, j)`.

  Blocks past the row's length repeat the last valid block (no new DMA). A length-0 row repeats the block of the
  grid step before it: the last block of the last non-empty row before it (`src_ref[b]`), last head block.
  """
  length = lengths_ref[b]
  src = src_ref[b]
  live = jnp.minimum(s * blocks_per_split + j, last_valid_block(length, block_k))
  idle = last_valid_block(lengths_ref[src], block_k)
  empty = length == 0
  return (jnp.where(empty, src, b), jnp.where(empty, idle, live), jnp.where(empty, num_head_blocks - 1, hb))


def previous_live_row(lengths: jax.Array) -> jax.Array:
  """int32 `[batch]`: for each row, the last row at or before it with a non-zero length (0 if none)."""
  rows = jnp.arange(lengths.shape[0], dtype=jnp.int32)
  return jnp.maximum(lax.cummax(jnp.where(lengths > 0, rows, -1), axis=0), 0)


def _kernel(lengths_ref, src_ref, q_ref, k_ref, v_ref, o_ref, m_ref, l_ref, acc_sc, m_sc, l_sc, *, sm_scale: float,
            block_k: int, blocks_per_split: int):
  """q_ref `[rows, width]`; k_ref/v_ref `[block_k, width]`; o_ref `[rows, width]`; m_ref/l_ref `[rows, 128]`."""
  del src_ref  # Only the index maps read it.
  b, s, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)
  length = lengths_ref[b]
  block = s * blocks_per_split + j

  @pl.when(j == 0)
  def _init():
    acc_sc[...] = jnp.zeros_like(acc_sc)
    m_sc[...] = jnp.full_like(m_sc, MASK_VALUE)
    l_sc[...] = jnp.zeros_like(l_sc)

  def update(masked: bool):
    q = q_ref[...]
    k = k_ref[...]
    v = v_ref[...]
    precision = lax.Precision.HIGHEST if q.dtype == jnp.float32 else None
    s_qk = lax.dot_general(q, k, (((1,), (1,)), ((), ())), precision=precision,
                           preferred_element_type=jnp.float32) * sm_scale  # [rows, block_k]
    if masked:
      # Only the block holding the row's end: its tail may lie past the array end (undefined contents) or hold
      # stale cache entries, so mask the logits and zero V there (0 * NaN would poison the matmul).
      num_valid = length - block * block_k
      s_qk = jnp.where(lax.broadcasted_iota(jnp.int32, s_qk.shape, 1) < num_valid, s_qk, MASK_VALUE)
      v_valid = lax.broadcasted_iota(jnp.int32, v.shape, 0) < num_valid
      v = jnp.where(v_valid, v.astype(jnp.float32), 0.0).astype(v.dtype)
    # Stats are kept lane-replicated in scratch; in registers they are [rows, 1] columns.
    m_prev = jnp.max(m_sc[...], axis=1, keepdims=True)
    l_prev = jnp.max(l_sc[...], axis=1, keepdims=True)
    m_next = jnp.maximum(m_prev, jnp.max(s_qk, axis=1, keepdims=True))
    alpha = jnp.exp(m_prev - m_next)
    p = jnp.exp(s_qk - m_next)
    l_next = alpha * l_prev + jnp.sum(p, axis=1, keepdims=True)
    pv = lax.dot_general(p.astype(v.dtype), v, (((1,), (0,)), ((), ())), precision=precision,
                         preferred_element_type=jnp.float32)
    acc_sc[...] = alpha * acc_sc[...] + pv
    m_sc[...] = jnp.broadcast_to(m_next, m_sc.shape)
    l_sc[...] = jnp.broadcast_to(l_next, l_sc.shape)

  block_end = (block + 1) * block_k

  @pl.when(block_end <= length)
  def _full_block():
    update(masked=False)

  @pl.when(jnp.logical_and(block * block_k < length, block_end > length))
  def _last_block():
    update(masked=True)

  @pl.when(j == blocks_per_split - 1)
  def _finish():
    o_ref[...] = acc_sc[...]
    m_ref[...] = m_sc[...]
    l_ref[...] = l_sc[...]


@functools.partial(jax.jit, static_argnames=("sm_scale", "block_k", "num_splits", "heads_per_block", "interpret"))
def decode_partials_tpu(q: jax.Array, k: jax.Array, v: jax.Array, lengths: jax.Array, *, sm_scale: float,
                        block_k: int, num_splits: int, heads_per_block: int, interpret=False
                        ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-split flash-decoding partials.

  Args:
    q: `[batch, kv_heads // heads_per_block, rows, heads_per_block * head_dim]`: per head block, the (padded)
      query group of its i-th kv head in rows `[i*rows/hpb, (i+1)*rows/hpb)` and columns `[i*D, (i+1)*D)`,
      zeros elsewhere. `rows` is a multiple of 8 (16 for 16-bit types). Same dtype as the cache.
    k, v: `[batch, max_len, kv_heads, head_dim]` caches.
    lengths: int32 `[batch]` in `[0, max_len]`.
    block_k: cache positions per grid step (a multiple of 8, or `max_len`).
    num_splits: splits of the cache length (a parallel grid axis, for megacore and small batches).
    heads_per_block: kv heads per block; `heads_per_block * head_dim` is a multiple of 128 or the full row.
    interpret: False, True or a `pltpu.InterpretParams`.

  Returns:
    (acc `[batch, head_blocks, num_splits, rows, width]` f32 un-normalised output, m and l
    `[batch, head_blocks, num_splits, rows, 128]` f32, lane-replicated running max and softmax denominator).
  """
  batch, max_len, kv_heads, head_dim = k.shape
  num_head_blocks, rows, width = q.shape[1:]
  num_blocks = pl.cdiv(max_len, block_k)
  blocks_per_split = pl.cdiv(num_blocks, num_splits)
  k2 = k.reshape(batch, max_len, kv_heads * head_dim)
  v2 = v.reshape(batch, max_len, kv_heads * head_dim)
  kv_map = functools.partial(kv_block_index, blocks_per_split=blocks_per_split, block_k=block_k,
                             num_head_blocks=num_head_blocks)
  kv_spec = pl.BlockSpec((None, block_k, width), kv_map)
  out_map = lambda b, hb, s, j, *_: (b, hb, s, 0, 0)
  kernel = functools.partial(_kernel, sm_scale=sm_scale, block_k=block_k, blocks_per_split=blocks_per_split)
  itemsize = k.dtype.itemsize
  cost = pl.CostEstimate(
      flops=4 * batch * num_head_blocks * rows * max_len * width,
      transcendentals=batch * num_head_blocks * rows * max_len,
      bytes_accessed=2 * k.size * itemsize + q.size * itemsize + 4 * batch * num_head_blocks * num_splits * rows * (
          width + 2 * _LANES))
  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=2,
      grid=(batch, num_head_blocks, num_splits, blocks_per_split),
      in_specs=[
          pl.BlockSpec((None, None, rows, width), lambda b, hb, s, j, *_: (b, hb, 0, 0)),
          kv_spec,
          kv_spec,
      ],
      out_specs=[
          pl.BlockSpec((None, None, None, rows, width), out_map),
          pl.BlockSpec((None, None, None, rows, _LANES), out_map),
          pl.BlockSpec((None, None, None, rows, _LANES), out_map),
      ],
      scratch_shapes=[
          pltpu.VMEM((rows, width), jnp.float32),
          pltpu.VMEM((rows, _LANES), jnp.float32),
          pltpu.VMEM((rows, _LANES), jnp.float32),
      ],
  )
  return pl.pallas_call(
      kernel,
      grid_spec=grid_spec,
      out_shape=[
          jax.ShapeDtypeStruct((batch, num_head_blocks, num_splits, rows, width), jnp.float32),
          jax.ShapeDtypeStruct((batch, num_head_blocks, num_splits, rows, _LANES), jnp.float32),
          jax.ShapeDtypeStruct((batch, num_head_blocks, num_splits, rows, _LANES), jnp.float32),
      ],
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
      cost_estimate=cost,
      interpret=interpret,
      name="decode_attention_tpu",
  )(lengths, previous_live_row(lengths), q, k2, v2)
