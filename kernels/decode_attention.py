"""Ragged grouped-query decode attention: one new token per row against a KV cache with per-row lengths.

`decode_attention` is the entry point the sampler calls inside its jitted `lax.while_loop`. It picks (at trace
time, see `select_impl`) a Pallas kernel where one compiles for the target platform (Triton on GPUs, Mosaic on
TPUs) and the plain-jnp `decode_attention_reference` elsewhere, logs the choice once per configuration, and merges the
kernel's per-split partials (flash-decoding: Dao et al. 2023). The kernels skip every cache block past a row's
length, so a length-0 (finished) row costs nothing and a ragged batch costs its valid tokens, not its max length.
The target platform is that of the context mesh's devices (`target_platform`), so a program compiled for a TPU
topology from a CPU host holds the Mosaic kernel a TPU host would compile.

Forward only: `pallas_call` has no reverse-mode rule, and decoding needs none. Use the reference (or the model's
full attention) under `jax.grad`.
"""

from __future__ import annotations

import logging
import threading

import jax
from jax import lax
import jax.numpy as jnp

from kernels.decode_attention_reference import decode_attention_reference
from kernels.decode_attention_select import IMPLS, KernelChoice, PALLAS_MOSAIC_TPU, PALLAS_TRITON, select_impl
from kernels.decode_attention_tpu import decode_partials_tpu
from kernels.decode_attention_triton import decode_partials_triton

logger = logging.getLogger(__name__)
_logged: set = set()
_logged_lock = threading.Lock()


def _log_once(choice: KernelChoice, q: jax.Array, k_cache: jax.Array) -> None:
  key = (choice, q.shape, q.dtype.name, k_cache.shape, k_cache.dtype.name)
  with _logged_lock:
    if key in _logged:
      return
    _logged.add(key)
  logger.info("decode_attention: %s [q %s %s, cache %s %s]", choice.describe(), q.dtype.name, list(q.shape),
              k_cache.dtype.name, list(k_cache.shape))


def _validate(q, k_cache, v_cache, lengths, sm_scale) -> None:
  def fail(msg):
    raise ValueError(f"decode_attention: {msg}")

  if q.ndim != 3:
    fail(f"q must be [batch, num_q_heads, head_dim], got shape {q.shape}; for a [batch, 1, heads, dim] query "
         "pass q[:, 0]")
  if k_cache.ndim != 4:
    fail(f"k_cache must be [batch, max_len, num_kv_heads, head_dim], got shape {k_cache.shape}")
  if v_cache.shape != k_cache.shape:
    fail(f"v_cache shape {v_cache.shape} must equal k_cache shape {k_cache.shape}")
  if v_cache.dtype != k_cache.dtype:
    fail(f"v_cache dtype {v_cache.dtype} must equal k_cache dtype {k_cache.dtype}")
  if not jnp.issubdtype(k_cache.dtype, jnp.floating) or not jnp.issubdtype(q.dtype, jnp.floating):
    fail(f"q and the caches must be floating point, got {q.dtype} and {k_cache.dtype}")
  batch, num_q_heads, head_dim = q.shape
  if k_cache.shape[0] != batch:
    fail(f"q has batch {batch} but k_cache has batch {k_cache.shape[0]}")
  if k_cache.shape[3] != head_dim:
    fail(f"q has head_dim {head_dim} but k_cache has head_dim {k_cache.shape[3]}")
  if k_cache.shape[1] < 1:
    fail("k_cache must have max_len >= 1")
  if num_q_heads % k_cache.shape[2]:
    fail(f"num_q_heads ({num_q_heads}) must be a multiple of num_kv_heads ({k_cache.shape[2]}) for GQA")
  if lengths.shape != (batch,):
    fail(f"lengths must be [batch] = ({batch},), got shape {lengths.shape}")
  if not jnp.issubdtype(lengths.dtype, jnp.integer):
    fail(f"lengths must be an integer array, got {lengths.dtype}")
  if sm_scale is not None and not isinstance(sm_scale, (int, float)):
    fail(f"sm_scale must be a Python float or None (it is baked into the kernel), got {type(sm_scale).__name__}")


def combine_splits(acc: jax.Array, m: jax.Array, l: jax.Array) -> jax.Array:
  """Merges flash-decoding partials over the split axis (axis -3 of acc, -2 of m and l).

  acc `[..., splits, rows, width]` un-normalised outputs, m/l `[..., splits, rows]` running max and softmax
  denominator of each split -> `[..., rows, width]` f32: sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s with
  M = max_s m_s. Rows whose splits are all empty (length 0) give zeros.
  """
  m_max = jnp.max(m, axis=-2, keepdims=True)
  # As in jax's decode_attention: keeps XLA from re-associating the exponent (b/389925439).
  m_max = lax.optimization_barrier(m_max)
  weight = jnp.exp(m - m_max)
  denom = jnp.sum(weight * l, axis=-2)
  out = jnp.sum(weight[..., None] * acc, axis=-3)
  return out / jnp.where(denom == 0.0, 1.0, denom)[..., None]


def _run_triton(choice, q, k_cache, v_cache, lengths, sm_scale):
  batch, num_q_heads, head_dim = q.shape
  num_kv_heads = k_cache.shape[2]
  group = num_q_heads // num_kv_heads
  qg = q.astype(k_cache.dtype).reshape(batch, num_kv_heads, group, head_dim)
  acc, m, l = decode_partials_triton(qg, k_cache, v_cache, lengths, sm_scale=sm_scale, block_k=choice.block_k,
                                     num_splits=choice.num_splits, block_h=choice.block_h,
                                     interpret=choice.interpret)
  return combine_splits(acc, m, l).reshape(batch, num_q_heads, head_dim)


def _run_tpu(choice, q, k_cache, v_cache, lengths, sm_scale):
  batch, num_q_heads, head_dim = q.shape
  num_kv_heads = k_cache.shape[2]
  group = num_q_heads // num_kv_heads
  hpb, block_h = choice.heads_per_block, choice.block_h
  num_head_blocks = num_kv_heads // hpb
  qg = q.astype(k_cache.dtype).reshape(batch, num_head_blocks, hpb, group, head_dim)
  qg = jnp.pad(qg, ((0, 0), (0, 0), (0, 0), (0, block_h - group), (0, 0)))
  # Block-diagonal q: head i of a block keeps its group in row band i and column band i (exact, no matmul).
  eye = jnp.eye(hpb, dtype=bool)[None, None, :, None, :, None]
  q_bd = jnp.where(eye, qg[:, :, :, :, None, :], jnp.zeros((), qg.dtype))
  q_bd = q_bd.reshape(batch, num_head_blocks, hpb * block_h, hpb * head_dim)
  acc, m, l = decode_partials_tpu(q_bd, k_cache, v_cache, lengths, sm_scale=sm_scale, block_k=choice.block_k,
                                  num_splits=choice.num_splits, heads_per_block=hpb, interpret=choice.interpret)
  out = combine_splits(acc, m[..., 0], l[..., 0])  # [batch, head_blocks, rows, width]
  out = out.reshape(batch, num_head_blocks, hpb, block_h, hpb, head_dim)
  out = jnp.moveaxis(jnp.diagonal(out, axis1=2, axis2=4), -1, 2)  # [batch, head_blocks, hpb, block_h, head_dim]
  return out[:, :, :, :group].reshape(batch, num_q_heads, head_dim)


def decode_attention(q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, lengths: jax.Array, *,
                     sm_scale: float | None = None, impl: str = "auto", block_k: int | None = None,
                     num_splits: int | None = None, interpret: bool | None = None,
                     platform: str | None = None) -> jax.Array:
  """One decode step of grouped-query attention over a ragged KV cache (flash-decoding where a kernel lowers).

  Args:
    q: `[batch, num_q_heads, head_dim]`, the new token's queries (rotary already applied).
    k_cache, v_cache: `[batch, max_len, num_kv_heads, head_dim]`, same dtype; `num_q_heads % num_kv_heads == 0`.
    lengths: int `[batch]` (traced): row b attends to positions `[0, lengths[b])`; clamped to `[0, max_len]`. A
      length-0 row returns zeros and costs no kernel work.
    sm_scale: logit scale (a Python float), default `head_dim ** -0.5`.
    impl: "auto" (kernel where it lowers for the platform and shapes, else the reference), "pallas" (force the
      platform's kernel; on CPU Triton's, else Mosaic's, in interpret mode), "reference", "pallas_triton" or
      "pallas_mosaic_tpu".
    block_k, num_splits: override the kernel's block heuristics (see `select_impl`).
    interpret: run the kernel in Pallas interpret mode; default only where it cannot compile natively.
    platform: choose as for this platform instead of `target_platform()` (the devices of the context mesh set by
      `jax.set_mesh`, else `jax.default_backend()`), e.g. "cuda" or "tpu" when lowering for an accelerator from a
      CPU host without a mesh.

  Returns:
    `[batch, num_q_heads, head_dim]` in q's dtype. q is cast to the cache dtype; softmax and accumulation are fp32.
    Usable under `jax.jit` and inside `lax.while_loop` (static shapes, traced lengths). No reverse-mode AD.
  """
  _validate(q, k_cache, v_cache, lengths, sm_scale)
  choice = select_impl(q.shape, k_cache.shape, k_cache.dtype, platform=platform, impl=impl, block_k=block_k,
                       num_splits=num_splits, interpret=interpret)
  _log_once(choice, q, k_cache)
  sm_scale = float(q.shape[-1] ** -0.5 if sm_scale is None else sm_scale)
  lengths = jnp.clip(lengths.astype(jnp.int32), 0, k_cache.shape[1])
  if choice.name == PALLAS_TRITON:
    out = _run_triton(choice, q, k_cache, v_cache, lengths, sm_scale)
  elif choice.name == PALLAS_MOSAIC_TPU:
    out = _run_tpu(choice, q, k_cache, v_cache, lengths, sm_scale)
  else:
    return decode_attention_reference(q, k_cache, v_cache, lengths, sm_scale=sm_scale)
  return out.astype(q.dtype)


__all__ = ["IMPLS", "KernelChoice", "combine_splits", "decode_attention", "decode_attention_reference",
           "select_impl"]
