"""Which decode-attention implementation runs, with which blocks: a pure function of shapes, dtype and platform.

`select_impl` is what `decode_attention` calls at trace time; `sampler_kernel_cases` enumerates every choice the
sampler can make for given model dims and cache lengths, so tests can lower each one for GPU and TPU on a CPU
machine. Block sizes are static heuristics (no autotuning): they are fixed per (shape, dtype, platform) so the set of
compiled kernels is known in advance.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp

PALLAS_TRITON = "pallas_triton"
PALLAS_MOSAIC_TPU = "pallas_mosaic_tpu"
REFERENCE = "reference"
IMPLS = ("auto", "pallas", REFERENCE, PALLAS_TRITON, PALLAS_MOSAIC_TPU)

GPU_PLATFORMS = ("gpu", "cuda", "rocm")
# GPU split heuristic: enough programs for ~4 waves on an H100 (132 SMs), and no split longer than this many
# positions, so one long row in a ragged batch is spread over many SMs instead of serialising on one.
GPU_NUM_SMS = 132
GPU_MAX_SPLIT_LEN = 2048
# ... nor shorter than this: each split writes a [group, head_dim] fp32 partial that the merge reads back.
GPU_MIN_SPLIT_LEN = 512
# Bytes of one K tile per Triton loop step; with V and 2 pipeline stages this is 4x in shared memory.
GPU_TILE_BYTES = 32 * 1024
# Bytes of one K block per TPU grid step (Pallas double-buffers K and V: 4x in VMEM).
TPU_BLOCK_BYTES = 256 * 1024
TPU_VMEM_BUDGET = 12 * 1024 * 1024  # below the 16 MiB default scoped VMEM of v5e
TPU_MAX_HEADS_PER_BLOCK = 8


def target_platform() -> str:
  """The platform a program is being compiled for: that of the context mesh's devices (inside
  `jax.set_mesh(mesh)`, e.g. compile-only TPU devices of a topology on a CPU host), else `jax.default_backend()`."""
  mesh = jax.sharding.get_abstract_mesh()
  device = getattr(mesh, "abstract_device", None)
  if not mesh.empty and device is not None:
    return device.platform
  return jax.default_backend()


@dataclasses.dataclass(frozen=True)
class KernelChoice:
  """The implementation `decode_attention` runs for one configuration.

  Attributes:
    name: "pallas_triton", "pallas_mosaic_tpu" or "reference".
    platform: the platform the choice was made for ("cpu", "gpu", "cuda", "rocm", "tpu").
    block_k: cache positions per kernel step (None for the reference).
    num_splits: splits of the cache length, merged after the kernel (flash-decoding).
    block_h: query rows per kv head given to the kernel (the GQA group, zero-padded).
    heads_per_block: kv heads per kernel block (TPU packs several narrow heads into one 128-lane block).
    interpret: whether the kernel runs in Pallas interpret mode.
    reason: why this implementation was picked.
  """

  name: str
  platform: str
  block_k: int | None = None
  num_splits: int | None = None
  block_h: int | None = None
  heads_per_block: int | None = None
  interpret: bool = False
  reason: str = ""

  @property
  def is_pallas(self) -> bool:
    return self.name != REFERENCE

  @property
  def backend(self) -> str:
    """The compiler that runs it: "triton", "mosaic_tpu" or "xla" (the reference)."""
    return {PALLAS_TRITON: "triton", PALLAS_MOSAIC_TPU: "mosaic_tpu"}.get(self.name, "xla")

  def describe(self) -> str:
    """One log line, e.g. "using pallas-triton (block_k=128, splits=4, block_h=16): ..."."""
    if not self.is_pallas:
      return f"using reference: {self.reason}"
    extra = f", heads_per_block={self.heads_per_block}" if (self.heads_per_block or 1) > 1 else ""
    mode = ", interpret mode" if self.interpret else ""
    return (f"using {self.name.replace('_', '-')} (block_k={self.block_k}, splits={self.num_splits}, "
            f"block_h={self.block_h}{extra}{mode}): {self.reason}")


@dataclasses.dataclass(frozen=True)
class KernelCase:
  """One configuration the sampler can hit: shapes, dtype, platform and what `select_impl` picks for it."""

  q_shape: tuple[int, int, int]
  k_shape: tuple[int, int, int, int]
  dtype: str
  platform: str
  choice: KernelChoice


def _shape(x: Any) -> tuple[int, ...]:
  return tuple(getattr(x, "shape", x))


def _family(platform: str) -> str:
  if platform in GPU_PLATFORMS:
    return "gpu"
  return platform


def _is_pow2(n: int) -> bool:
  return n > 0 and n & (n - 1) == 0


def _floor_pow2(n: int) -> int:
  return 1 << (max(n, 1).bit_length() - 1)


def _next_pow2(n: int) -> int:
  return 1 << max(n - 1, 0).bit_length()


def _even_splits(num_blocks: int, splits: int) -> int:
  """Caps `splits` at the block count and drops splits that would be empty."""
  splits = max(1, min(splits, num_blocks))
  return math.ceil(num_blocks / math.ceil(num_blocks / splits))


def _triton_config(q_shape, k_shape, dtype, block_k, num_splits) -> tuple[dict | None, str]:
  batch, num_q_heads, head_dim = q_shape
  _, max_len, num_kv_heads, _ = k_shape
  group = num_q_heads // num_kv_heads
  if dtype.name not in ("float32", "bfloat16", "float16"):
    return None, f"dtype {dtype.name} not supported by the Triton kernel (float32, bfloat16, float16)"
  if not (_is_pow2(head_dim) and 16 <= head_dim <= 256):
    return None, f"head_dim {head_dim} not supported by the Triton kernel (a power of 2 in [16, 256])"
  block_h = max(16, _next_pow2(group))
  if block_h > 64:
    return None, f"{group} query heads per kv head exceed the Triton kernel's 64-row q tile"
  if block_k is None:
    block_k = min(256, max(16, _floor_pow2(GPU_TILE_BYTES // (head_dim * dtype.itemsize))))
    block_k = min(block_k, max(16, _next_pow2(max_len)))
  num_blocks = math.ceil(max_len / block_k)
  if num_splits is None:
    occupancy = math.ceil(4 * GPU_NUM_SMS / (batch * num_kv_heads))
    num_splits = max(occupancy, math.ceil(max_len / GPU_MAX_SPLIT_LEN))
    num_splits = min(num_splits, max(1, max_len // GPU_MIN_SPLIT_LEN))
  return dict(block_k=block_k, num_splits=_even_splits(num_blocks, num_splits), block_h=block_h,
              heads_per_block=1), f"Triton kernel for {dtype.name} head_dim {head_dim}"


def _tpu_config(q_shape, k_shape, dtype, block_k, num_splits) -> tuple[dict | None, str]:
  batch, num_q_heads, head_dim = q_shape
  _, max_len, num_kv_heads, _ = k_shape
  group = num_q_heads // num_kv_heads
  if dtype.name not in ("float32", "bfloat16"):
    return None, f"dtype {dtype.name} not supported by the Mosaic TPU kernel (float32, bfloat16)"
  heads_per_block = next((h for h in range(1, num_kv_heads + 1)
                          if num_kv_heads % h == 0 and (h * head_dim) % 128 == 0), num_kv_heads)
  if heads_per_block > TPU_MAX_HEADS_PER_BLOCK:
    return None, (f"head_dim {head_dim} with {num_kv_heads} kv heads would pack {heads_per_block} heads per "
                  f"Mosaic TPU block (at most {TPU_MAX_HEADS_PER_BLOCK})")
  width = heads_per_block * head_dim
  sublanes = 8 if dtype.itemsize == 4 else 16
  block_h = -(-group // sublanes) * sublanes
  rows = heads_per_block * block_h
  if block_k is None:
    block_k = min(2048, max(128, (TPU_BLOCK_BYTES // (width * dtype.itemsize)) // 128 * 128))
    if max_len <= block_k:
      block_k = max_len
  vmem = (4 * block_k * width * dtype.itemsize + 2 * rows * width * dtype.itemsize + rows * width * 4
          + 2 * (rows * width * 4 + 2 * rows * 128 * 4) + 2 * rows * 128 * 4)
  if vmem > TPU_VMEM_BUDGET:
    return None, (f"block_k={block_k} x width {width} needs ~{vmem >> 20} MiB of VMEM (budget "
                  f"{TPU_VMEM_BUDGET >> 20} MiB); pass a smaller block_k")
  num_blocks = math.ceil(max_len / block_k)
  if num_splits is None:
    # One split is best on a single TensorCore; two give megacore chips work when there is a single row/head block.
    num_splits = 1 if batch * (num_kv_heads // heads_per_block) >= 2 else 2
  return dict(block_k=block_k, num_splits=_even_splits(num_blocks, num_splits), block_h=block_h,
              heads_per_block=heads_per_block), f"Mosaic TPU kernel for {dtype.name} head_dim {head_dim}"


def _override_error(kernel: str, k_shape, block_k) -> str | None:
  """Why a user-given `block_k` cannot be lowered by `kernel` (None if it can)."""
  max_len = k_shape[1]
  if block_k is None:
    return None
  if kernel == PALLAS_TRITON and not (_is_pow2(block_k) and block_k >= 16):
    return (f"decode_attention: block_k={block_k} cannot be lowered by Triton, which needs power-of-2 tiles of at "
            "least 16 rows; pass a power of 2 >= 16 or block_k=None")
  if kernel == PALLAS_MOSAIC_TPU and block_k % 8 and block_k != max_len:
    return (f"decode_attention: block_k={block_k} cannot be lowered by Mosaic TPU, which needs the block's "
            f"second-minor dim to be a multiple of 8 or the full max_len ({max_len}); pass a multiple of 8 (128 or "
            "more is fastest) or block_k=None")
  return None


def select_impl(q_shape: Any, k_shape: Any, dtype: Any, *, platform: str | None = None, impl: str = "auto",
                block_k: int | None = None, num_splits: int | None = None,
                interpret: bool | None = None) -> KernelChoice:
  """Picks the decode-attention implementation and its blocks.

  Args:
    q_shape: `[batch, num_q_heads, head_dim]` (a shape or an array).
    k_shape: `[batch, max_len, num_kv_heads, head_dim]` (a shape or an array).
    dtype: the cache dtype (the kernels compute in it).
    platform: target platform ("cpu", "gpu", "cuda", "rocm", "tpu"); default `target_platform()`: the context
      mesh's devices, else `jax.default_backend()`.
    impl: "auto" (the platform's kernel where it supports the shapes, else the reference), "pallas" (the platform's
      kernel; on CPU, Triton's, else Mosaic's, in interpret mode), "reference", or a kernel by name
      ("pallas_triton", "pallas_mosaic_tpu").
    block_k, num_splits: override the heuristic blocks of a kernel.
    interpret: run the kernel in Pallas interpret mode; default: only where the kernel cannot compile natively.

  Returns:
    A `KernelChoice`. Raises ValueError for a forced kernel that cannot take the shapes, or invalid overrides.
  """
  if impl not in IMPLS:
    raise ValueError(f"decode_attention: impl must be one of {IMPLS}, got {impl!r}")
  q_shape, k_shape = _shape(q_shape), _shape(k_shape)
  dtype = jnp.dtype(dtype)
  platform = platform or target_platform()
  family = _family(platform)
  if impl == REFERENCE:
    return KernelChoice(REFERENCE, platform, reason="requested (impl='reference')")
  if num_splits is not None and (not isinstance(num_splits, int) or num_splits < 1):
    raise ValueError(f"decode_attention: num_splits must be a positive int or None, got {num_splits!r}")
  if block_k is not None and (not isinstance(block_k, int) or block_k < 1):
    raise ValueError(f"decode_attention: block_k must be a positive int or None, got {block_k!r}")
  if impl in (PALLAS_TRITON, PALLAS_MOSAIC_TPU):
    candidates = [impl]
  elif family == "tpu":
    candidates = [PALLAS_MOSAIC_TPU]
  elif family == "gpu":
    candidates = [PALLAS_TRITON]
  elif impl == "pallas":
    # Interpret mode runs either kernel; Mosaic's block packing takes head dims Triton cannot (e.g. 8).
    candidates = [PALLAS_TRITON, PALLAS_MOSAIC_TPU]
  else:
    return KernelChoice(REFERENCE, platform, reason=(
        f"no Pallas backend compiles for platform {platform!r}; interpret mode would be far slower than XLA"))
  override_errors, reasons = [], []
  for kernel in candidates:
    error = _override_error(kernel, k_shape, block_k)
    if error:
      override_errors.append(error)
      continue
    native = (kernel == PALLAS_TRITON and family == "gpu") or (kernel == PALLAS_MOSAIC_TPU and family == "tpu")
    if interpret is not None and not interpret and not native:
      raise ValueError(f"decode_attention: {kernel} cannot be compiled for platform {platform!r}; pass "
                       "interpret=True (or interpret=None) to run it in Pallas interpret mode")
    configure = _triton_config if kernel == PALLAS_TRITON else _tpu_config
    config, reason = configure(q_shape, k_shape, dtype, block_k, num_splits)
    if config is not None:
      return KernelChoice(kernel, platform, interpret=not native if interpret is None else bool(interpret),
                          reason=reason, **config)
    reasons.append(reason)
  if override_errors:
    raise ValueError(override_errors[0])
  if impl == "auto":
    return KernelChoice(REFERENCE, platform, reason="; ".join(reasons))
  raise ValueError(f"decode_attention: impl={impl!r} cannot run this configuration: {'; '.join(reasons)}; use "
                   "impl='auto' (falls back to the reference) or impl='reference'")


def sampler_kernel_cases(*, num_q_heads: int, num_kv_heads: int, head_dim: int, cache_lens: Iterable[int],
                         batch_sizes: Iterable[int], dtypes: Sequence[Any] = ("bfloat16", "float32"),
                         platforms: Sequence[str] = ("cuda", "tpu")) -> list[KernelCase]:
  """Every configuration `decode_attention(impl="auto")` can meet in a sampler for these model dims.

  The sampler's shapes are static per run (batch, cache length, heads, dtype), so the cross product of the given
  batch sizes, cache lengths, dtypes and platforms is the full set of kernels it can compile.
  """
  cases = []
  for batch, max_len, dtype, platform in itertools.product(batch_sizes, cache_lens, dtypes, platforms):
    q_shape = (batch, num_q_heads, head_dim)
    k_shape = (batch, max_len, num_kv_heads, head_dim)
    choice = select_impl(q_shape, k_shape, dtype, platform=platform)
    cases.append(KernelCase(q_shape, k_shape, jnp.dtype(dtype).name, platform, choice))
  return cases
