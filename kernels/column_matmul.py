"""`column_matmul(w, x)`: `w [M, K] @ x [K, N]` for a CPU decode step, by a native AVX-512 kernel where it builds.

A decode step multiplies each weight matrix by a few activation columns (N = the batch). XLA:CPU's matmul runs
such products at ~70% of the machine's fp32 rate, less for the small ones, and the decode loop is little else
(`benchmarks/rollout.py`). `column_matmul.cc` is an XLA FFI custom call that keeps a block of 8 weight rows x 32
columns in registers, prefetches the weight stream and splits rows over XLA's intra-op thread pool (measured on
the 2-core development machine: 19.4 -> 16.4 ms per decode step of a 39M-param Qwen2 at batch 32).

The library is compiled on first use with the C++ compiler (`$CXX`, else `g++`) against `jax.ffi.include_dir()`
into a per-user cache (`$PRORL_JAX_KERNEL_CACHE`, else `~/.cache/prorl_jax/kernels`), keyed by the source, the
flags, the compiler and jax's version. Where it cannot be used — not an x86-64 CPU with AVX-512F, no compiler, a
failed build, `PRORL_JAX_NATIVE_MATMUL=0`, a dtype other than float32, more than `MAX_NATIVE_COLUMNS` columns, or a
non-CPU platform — `column_matmul` is `jnp.dot`; `native_status()` says which was picked and why (also logged once).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import jax
import jax.numpy as jnp

log = logging.getLogger(__name__)

TARGET = "prorl_column_matmul"
# Measured against XLA on [32000 | 1408 | 512, 512 | 1408] weights: 1.2-1.7x at N = 16-64, 1.0-1.2x at 96-128,
# and about even (0.96-1.06x) at 256, where XLA's own kernels near the machine's peak.
MAX_NATIVE_COLUMNS = 128
_SOURCE = Path(__file__).with_name("column_matmul.cc")
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")
_lock = threading.Lock()
_state: tuple[bool, str] | None = None  # (available, reason), set once per process by _load


def _cache_dir() -> Path:
  root = os.environ.get("PRORL_JAX_KERNEL_CACHE") or os.path.join(Path.home(), ".cache", "prorl_jax", "kernels")
  return Path(root)


def _compiler() -> str | None:
  return shutil.which(os.environ.get("CXX", "g++"))


def _build(cxx: str) -> Path:
  """Compiles the library (once per source/flags/compiler/jax version) and returns its path."""
  version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
  key = hashlib.sha256("\n".join([_SOURCE.read_text(), " ".join(_FLAGS), version, jax.__version__]).encode())
  out_dir = _cache_dir()
  out_dir.mkdir(parents=True, exist_ok=True)
  lib = out_dir / f"column_matmul-{key.hexdigest()[:16]}.so"
  if lib.exists():
    return lib
  # Build beside the target and rename into place: concurrent processes (tests, multi-host workers) never load a
  # half-written library.
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
  os.close(fd)
  try:
    cmd = [cxx, *_FLAGS, f"-I{jax.ffi.include_dir()}", str(_SOURCE), "-o", tmp]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
      raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{proc.stderr[-2000:]}")
    os.replace(tmp, lib)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return lib


def _try_load() -> tuple[bool, str]:
  if os.environ.get("PRORL_JAX_NATIVE_MATMUL", "1") == "0":
    return False, "disabled by PRORL_JAX_NATIVE_MATMUL=0"
  if platform.machine().lower() not in ("x86_64", "amd64"):
    return False, f"needs an x86-64 CPU, this is {platform.machine()}"
  cxx = _compiler()
  if cxx is None:
    return False, f"no C++ compiler ({os.environ.get('CXX', 'g++')}) on PATH"
  try:
    lib = ctypes.cdll.LoadLibrary(str(_build(cxx)))
  except (OSError, RuntimeError, subprocess.SubprocessError) as e:
    return False, f"build failed: {e}"
  if not lib.ProrlColumnMatmulSupported():
    return False, "this CPU lacks AVX-512F"
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.ProrlColumnMatmul), platform="cpu")
  return True, f"native AVX-512 kernel ({lib._name})"


def _load() -> tuple[bool, str]:
  """(available, reason): builds, loads and registers the kernel on the first call in a process."""
  global _state
  with _lock:
    if _state is None:
      _state = _try_load()
      log.info("column_matmul: %s", _state[1] if _state[0] else f"xla ({_state[1]})")
  return _state


def native_status() -> str:
  """Which implementation `column_matmul` uses for float32 on CPU, and why: "native ..." or "xla (reason)"."""
  ok, reason = _load()
  return reason if ok else f"xla ({reason})"


def column_matmul_reference(w: jax.Array, x: jax.Array) -> jax.Array:
  """`w [M, K] @ x [K, N]` by XLA (`jnp.dot`) in the operands' dtype."""
  return jnp.dot(w, x)


def _native(w: jax.Array, x: jax.Array) -> jax.Array:
  n = x.shape[1]
  padded = -(-n // 16) * 16
  if padded != n:
    x = jnp.pad(x, ((0, 0), (0, padded - n)))
  y = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((w.shape[0], padded), jnp.float32))(w, x)
  return y[:, :n] if padded != n else y


def column_matmul(w: jax.Array, x: jax.Array) -> jax.Array:
  """`w [M, K] @ x [K, N]` -> `[M, N]` (a weight matrix `[out, in]` times N activation columns).

  Float32 operands with 1 <= N <= `MAX_NATIVE_COLUMNS` run the native kernel on CPU when it is available (each
  output a float32 sum in increasing k, like XLA's; results agree with `jnp.dot` to rounding); everything else,
  and every other platform a program is lowered for, runs `column_matmul_reference`.
  """
  if w.ndim != 2 or x.ndim != 2 or w.shape[1] != x.shape[0]:
    raise ValueError(f"column_matmul needs w [M, K] and x [K, N], got {w.shape} and {x.shape}")
  eligible = (w.dtype == jnp.float32 and x.dtype == jnp.float32 and 1 <= x.shape[1] <= MAX_NATIVE_COLUMNS
              and w.shape[0] >= 1 and w.shape[1] >= 1)
  if not eligible or not _load()[0]:
    return column_matmul_reference(w, x)
  return jax.lax.platform_dependent(w, x, cpu=_native, default=column_matmul_reference)
