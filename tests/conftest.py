"""Test-wide set-up: 8 simulated CPU devices (before jax is imported), offline hubs, and one persistent XLA
compilation cache for the session.

The cache (a temporary directory, removed at exit; inherited by the subprocesses tests start) lets the many tests
that build the same small programs — trainer runs, CLI processes, resumed runs — load them instead of compiling them
again. A compiled program is the same either way.
"""

import atexit
import os
import shutil
import tempfile

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache_dir = tempfile.mkdtemp(prefix="prorl_jax_tests_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
  atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_xdist_auto_num_workers(config):
  """`-n auto` (pytest.ini): one test process per core, at most 4. Each runs JAX with 8 simulated devices and
  compiles on one core, so one process leaves a 2-core machine partly idle; beyond four they mostly add memory.
  The compilation cache above is made once, by the controlling process, and shared by all of them."""
  del config
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # not on macOS
  return max(1, min(cores or 1, 4))
