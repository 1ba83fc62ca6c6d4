"""kernels.column_matmul and kernels.cpu_native: the native decode matmul against numpy, its fallbacks, and the
library's build and dispatch rules."""

import os
import platform
import shutil
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import cpu_native
from kernels.column_matmul import MAX_NATIVE_COLUMNS, column_matmul


def _cpu_has_avx512() -> bool:
  try:
    with open("/proc/cpuinfo") as f:
      return " avx512f" in f.read()
  except OSError:
    return False


NATIVE_EXPECTED = (platform.machine() == "x86_64" and _cpu_has_avx512() and shutil.which("g++") is not None
                   and os.environ.get("PRORL_JAX_NATIVE_KERNELS", "1") != "0")


def test_native_kernel_builds_where_it_should():
  # A broken build must fail here, not fall back silently to XLA everywhere.
  status = cpu_native.native_status()
  if NATIVE_EXPECTED:
    assert status.startswith("native"), status
  else:
    assert status.startswith("xla ("), status


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (7, 3, 5), (8, 16, 16), (9, 513, 17), (33, 64, 32), (1000, 96, 33),
                                   (37, 200, 64), (250, 128, 128), (16, 40, 48), (64, 32, 129)])
@pytest.mark.parametrize("jit", [False, True])
def test_matches_numpy(m, k, n, jit):
  rng = np.random.RandomState(m * 1000 + k + n)
  w = rng.randn(m, k).astype(np.float32)
  x = rng.randn(k, n).astype(np.float32)
  fn = jax.jit(column_matmul) if jit else column_matmul
  y = fn(jnp.asarray(w), jnp.asarray(x))
  chex.assert_shape(y, (m, n))
  assert y.dtype == jnp.float32
  expected = w.astype(np.float64) @ x.astype(np.float64)
  # float32 sums over k: error grows like sqrt(k) ulps of the operands' products.
  np.testing.assert_allclose(np.asarray(y), expected, rtol=0, atol=1e-5 * np.sqrt(k) * 4)


def test_rows_and_columns_land_in_place():
  # One-hot operands: every output element names the (row, column) it came from, so a block written to the wrong
  # rows, a tail block or a padded column spilling into y shows up exactly.
  m, k, n = 27, 11, 21
  w = np.zeros((m, k), np.float32)
  w[np.arange(m), np.arange(m) % k] = np.arange(1, m + 1)
  x = np.zeros((k, n), np.float32)
  x[np.arange(k), np.arange(k) % n] = 1.0
  x[:, n - 1] += 1000.0
  y = np.asarray(jax.jit(column_matmul)(w, x))
  np.testing.assert_array_equal(y, w @ x)


def test_independent_calls_in_one_program():
  # XLA may run independent custom calls side by side on its thread pool; each claims work from the same pool.
  rng = np.random.RandomState(0)
  ws = [rng.randn(300 + 8 * i, 64).astype(np.float32) for i in range(4)]
  x = rng.randn(64, 32).astype(np.float32)
  ys = jax.jit(lambda ws, x: [column_matmul(w, x) for w in ws])(ws, x)
  for w, y in zip(ws, ys):
    np.testing.assert_allclose(np.asarray(y), w @ x, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("w_dtype,x_dtype", [(jnp.bfloat16, jnp.bfloat16), (jnp.float32, jnp.bfloat16)])
def test_other_dtypes_fall_back_to_xla(w_dtype, x_dtype):
  w = jnp.arange(12, dtype=jnp.float32).reshape(4, 3).astype(w_dtype)
  x = jnp.ones((3, 2), x_dtype)
  chex.assert_trees_all_close(column_matmul(w, x), jnp.dot(w, x))
  assert "prorl_column_matmul" not in jax.jit(column_matmul).lower(w, x).as_text()


def test_wide_products_use_xla():
  w, x = jnp.ones((8, 4)), jnp.ones((4, MAX_NATIVE_COLUMNS + 1))
  assert "prorl_column_matmul" not in jax.jit(column_matmul).lower(w, x).as_text()


def test_bad_shapes_name_the_operands():
  with pytest.raises(ValueError, match=r"w \[M, K\] and x \[K, N\]"):
    column_matmul(jnp.ones((4, 3)), jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="column_matmul"):
    column_matmul(jnp.ones((4,)), jnp.ones((4, 2)))


@pytest.mark.parametrize("platform_name", ["cuda", "tpu"])
def test_accelerator_lowering_uses_xla(platform_name):
  w, x = jnp.ones((64, 32)), jnp.ones((32, 32))
  text = jax.jit(column_matmul).trace(w, x).lower(lowering_platforms=(platform_name,)).as_text()
  assert "prorl_column_matmul" not in text
  assert "dot_general" in text


def _status_in_subprocess(tmp_path, **env) -> str:
  code = "from kernels import cpu_native; print(cpu_native.native_status())"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300,
                       env={**os.environ, "PRORL_JAX_KERNEL_CACHE": str(tmp_path / "cache"), **env},
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  return out.stdout.strip()


def test_switch_off_by_environment(tmp_path):
  assert _status_in_subprocess(tmp_path, PRORL_JAX_NATIVE_KERNELS="0") == "xla (disabled by PRORL_JAX_NATIVE_KERNELS=0)"


def test_failed_build_falls_back_and_says_why(tmp_path):
  fake = tmp_path / "broken-cxx"
  fake.write_text("#!/bin/sh\necho 'broken-cxx 1.0'\n[ \"$1\" = --version ] && exit 0\necho 'no such luck' >&2\n"
                  "exit 1\n")
  fake.chmod(0o755)
  status = _status_in_subprocess(tmp_path, CXX=str(fake))
  assert status.startswith("xla (build failed") and "no such luck" in status, status
  assert not list((tmp_path / "cache").glob("*.so"))  # no half-built library left for a later process to load


@pytest.mark.skipif(not NATIVE_EXPECTED, reason="needs an AVX-512 x86-64 CPU and g++")
def test_build_is_cached_per_source(tmp_path):
  assert _status_in_subprocess(tmp_path).startswith("native")
  libs = list((tmp_path / "cache").glob("cpu_decode-*.so"))
  assert len(libs) == 1
  mtime = libs[0].stat().st_mtime_ns
  assert _status_in_subprocess(tmp_path).startswith("native")
  assert [p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("cpu_decode-*.so")] == [mtime]


@pytest.mark.skipif(not NATIVE_EXPECTED, reason="needs an AVX-512 x86-64 CPU and g++")
def test_unusable_home_cache_builds_in_a_temp_dir(tmp_path):
  home = tmp_path / "home-is-a-file"
  home.write_text("")
  code = "from kernels import cpu_native; print(cpu_native.native_status())"
  env = {k: v for k, v in os.environ.items() if k != "PRORL_JAX_KERNEL_CACHE"}
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300,
                       env={**env, "HOME": str(home), "TMPDIR": str(tmp_path)},
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.stdout.startswith("native") and str(tmp_path / "prorl_jax_kernels_") in out.stdout, out.stdout
