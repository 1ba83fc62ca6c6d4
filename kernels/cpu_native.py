"""Builds, loads and registers `cpu_decode.cc`, the native (AVX-512, XLA FFI) kernels of the CPU decode step.

The library is compiled on first use with the C++ compiler (`$CXX`, else `g++`) against `jax.ffi.include_dir()`
into a per-user cache (`$PRORL_JAX_KERNEL_CACHE`, else `~/.cache/prorl_jax/kernels`), keyed by the source, the
flags, the compiler and jax's version (~3 s, once). Where it cannot be used — not an x86-64 CPU with AVX-512F, no
compiler, a failed build, or `PRORL_JAX_NATIVE_KERNELS=0` — `available()` is False and the kernels' callers
(`column_matmul`, `column_attention`) run their XLA references; `native_status()` says which and why (also logged
once).
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

log = logging.getLogger(__name__)

MATMUL_TARGET = "prorl_column_matmul"
ATTENTION_TARGET = "prorl_column_attention"
SWITCH = "PRORL_JAX_NATIVE_KERNELS"
_SOURCE = Path(__file__).with_name("cpu_decode.cc")
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")
_lock = threading.Lock()
_state: tuple[bool, str] | None = None  # (available, reason), set once per process by `available`


def _cache_dir() -> Path:
  """`$PRORL_JAX_KERNEL_CACHE`, else `~/.cache/prorl_jax/kernels`, else (home not writable) a per-user temp dir."""
  if os.environ.get("PRORL_JAX_KERNEL_CACHE"):
    return Path(os.environ["PRORL_JAX_KERNEL_CACHE"])
  home = Path.home() / ".cache" / "prorl_jax" / "kernels"
  try:
    home.mkdir(parents=True, exist_ok=True)
    if os.access(home, os.W_OK):
      return home
  except OSError:
    pass
  return Path(tempfile.gettempdir()) / f"prorl_jax_kernels_{os.getuid()}"


def _build(cxx: str) -> Path:
  """Compiles the library (once per source/flags/compiler/jax version) and returns its path."""
  version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
  key = hashlib.sha256("\n".join([_SOURCE.read_text(), " ".join(_FLAGS), version, jax.__version__]).encode())
  out_dir = _cache_dir()
  out_dir.mkdir(parents=True, exist_ok=True)
  lib = out_dir / f"cpu_decode-{key.hexdigest()[:16]}.so"
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
      raise RuntimeError(f"`{' '.join(cmd)}` failed: {proc.stderr[-2000:].strip()}")
    os.replace(tmp, lib)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return lib


def _try_load() -> tuple[bool, str]:
  if os.environ.get(SWITCH, "1") == "0":
    return False, f"disabled by {SWITCH}=0"
  if platform.machine().lower() not in ("x86_64", "amd64"):
    return False, f"needs an x86-64 CPU, this is {platform.machine()}"
  cxx = shutil.which(os.environ.get("CXX", "g++"))
  if cxx is None:
    return False, f"no C++ compiler ({os.environ.get('CXX', 'g++')}) on PATH"
  try:
    lib = ctypes.cdll.LoadLibrary(str(_build(cxx)))
  except (OSError, RuntimeError, subprocess.SubprocessError) as e:
    return False, f"build failed: {e}"
  if not lib.ProrlCpuDecodeSupported():
    return False, "this CPU lacks AVX-512F"
  jax.ffi.register_ffi_target(MATMUL_TARGET, jax.ffi.pycapsule(lib.ProrlColumnMatmul), platform="cpu")
  jax.ffi.register_ffi_target(ATTENTION_TARGET, jax.ffi.pycapsule(lib.ProrlColumnAttention), platform="cpu")
  return True, f"native AVX-512 kernels ({lib._name})"


def available() -> bool:
  """Whether the native kernels are built and registered (builds them on the first call in a process)."""
  global _state
  with _lock:
    if _state is None:
      _state = _try_load()
      log.info("CPU decode kernels: %s", _describe(_state))
  return _state[0]


def _describe(state: tuple[bool, str]) -> str:
  return state[1] if state[0] else f"xla ({state[1]})"


def native_status() -> str:
  """Which implementation the CPU decode kernels use, and why: "native ..." or "xla (reason)"."""
  available()
  return _describe(_state)
