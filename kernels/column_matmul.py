"""`column_matmul(w, x)`: `w [M, K] @ x [K, N]` for a CPU decode step, by a native AVX-512 kernel where it builds.

A decode step multiplies each weight matrix by a few activation columns (N = the batch). XLA:CPU's matmul runs
such products at ~70% of the machine's fp32 rate, less for the small ones, and the decode loop is little else
(`benchmarks/rollout.py`). The native kernel (`cpu_decode.cc`, built by `kernels.cpu_native`) keeps a block of 8
weight rows x 32 columns in registers, prefetches the weight stream and splits rows over XLA's intra-op thread pool
(measured on the 2-core development machine: 19.4 -> 16.4 ms per decode step of a 39M-param Qwen2 at batch 32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels import cpu_native

# Measured against XLA on [32000 | 1408 | 512, 512 | 1408] weights: 1.2-1.7x at N = 16-64, 1.0-1.2x at 96-128,
# and about even (0.96-1.06x) at 256, where XLA's own kernels near the machine's peak.
MAX_NATIVE_COLUMNS = 128


def column_matmul_reference(w: jax.Array, x: jax.Array) -> jax.Array:
  """`w [M, K] @ x [K, N]` by XLA (`jnp.dot`) in the operands' dtype."""
  return jnp.dot(w, x)


def _native(w: jax.Array, x: jax.Array) -> jax.Array:
  n = x.shape[1]
  padded = -(-n // 16) * 16
  if padded != n:
    x = jnp.pad(x, ((0, 0), (0, padded - n)))
  y = jax.ffi.ffi_call(cpu_native.MATMUL_TARGET, jax.ShapeDtypeStruct((w.shape[0], padded), jnp.float32))(w, x)
  return y[:, :n] if padded != n else y


def column_matmul(w: jax.Array, x: jax.Array) -> jax.Array:
  """`w [M, K] @ x [K, N]` -> `[M, N]` (a weight matrix `[out, in]` times N activation columns).

  Float32 operands with 1 <= N <= `MAX_NATIVE_COLUMNS` run the native kernel on CPU when it is available (each
  output a float32 sum in increasing k; results agree with `jnp.dot` to rounding); everything else, and every other
  platform a program is lowered for, runs `column_matmul_reference`.
  """
  if w.ndim != 2 or x.ndim != 2 or w.shape[1] != x.shape[0]:
    raise ValueError(f"column_matmul needs w [M, K] and x [K, N], got {w.shape} and {x.shape}")
  eligible = (w.dtype == jnp.float32 and x.dtype == jnp.float32 and 1 <= x.shape[1] <= MAX_NATIVE_COLUMNS
              and w.shape[0] >= 1 and w.shape[1] >= 1)
  if not eligible or not cpu_native.available():
    return column_matmul_reference(w, x)
  return jax.lax.platform_dependent(w, x, cpu=_native, default=column_matmul_reference)
