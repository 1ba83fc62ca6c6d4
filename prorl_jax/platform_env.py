"""Process environment set before any JAX backend starts (imports nothing of prorl_jax, no JAX backend)."""

from __future__ import annotations

import os


def quiet_tpu_probe() -> None:
  """On a machine with libtpu installed but no TPU chips, tells libtpu so before it loads, so it neither probes a
  cloud metadata server nor prints start-up warnings, and lets several processes load it. A TPU host is left
  alone."""
  try:
    from jax._src import hardware_utils
    chips, _ = hardware_utils.num_available_tpu_chips_and_device_id()
  except Exception:  # pragma: no cover - jax internals moved: leave the environment as it is
    return
  if chips:
    return
  # libtpu holds /tmp/libtpu_lockfile to keep two processes off one TPU; with no TPU here, several compile-only users
  # (a plan beside a test run) are fine.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-1")
