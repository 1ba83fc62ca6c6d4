"""Compile-only NVIDIA GPU devices: the JAX CUDA plugin compiles for a named GPU on a machine without one when it is
given the chip's target description (a text `GpuTargetConfigProto`) and the shape (slices x hosts x GPUs per host).

Needs `pip install -e .[gpu-aot]` (the plugin and its PJRT library, ~180 MB; no CUDA libraries are needed to
compile). The CUDA compiler reports memory but no cost analysis; `prorl_jax.planning` counts FLOPs and bytes from
the optimized HLO itself. The plugin logs that it finds no driver: harmless here.
"""

from __future__ import annotations

import os


# The fields this jaxlib's GpuTargetConfigProto parser takes (openxla/xla keeps one file per chip under
# xla/backends/gpu/target_config/specs/); SXM parts.
_DEVICE_INFO = {
    "h100": dict(core_count=132, memory_bandwidth=3352320000000, l2_cache_size=52428800, clock_rate_ghz=1.98,
                 device_memory_size=84942979072, description="NVIDIA H100 80GB HBM3"),
    "h200": dict(core_count=132, memory_bandwidth=4800000000000, l2_cache_size=62914560, clock_rate_ghz=1.98,
                 device_memory_size=150754820096, description="NVIDIA H200"),
}


def target_config(chip: str) -> str:
  """The text-format target description of `chip` ("h100", "h200") for the CUDA plugin."""
  d = _DEVICE_INFO[chip]
  return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: {d['core_count']}
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {d['memory_bandwidth']}
  l2_cache_size: {d['l2_cache_size']}
  clock_rate_ghz: {d['clock_rate_ghz']}
  device_memory_size: {d['device_memory_size']}
  shared_memory_per_block_optin: 232448
  cuda_compute_capability {{ major: 9 }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 8 patch: 0 }}
device_description_str: "{d['description']}"
"""


def cuda_plugin_status() -> tuple[bool, str]:
  """(available, reason): whether the JAX CUDA plugin is installed."""
  try:
    import jax_plugins.xla_cuda12  # noqa: F401
  except ImportError:
    return False, ("the JAX CUDA plugin is not installed; install it with `pip install -e .[gpu-aot]` (compiling "
                   "for a GPU needs no GPU, driver or CUDA libraries)")
  return True, ""


def gpu_devices(chip: str, *, hosts: int, gpus_per_host: int) -> tuple:
  """Compile-only devices of `hosts` hosts of `gpus_per_host` `chip` GPUs (`topology.topology` wraps them).

  Raises RuntimeError when the CUDA plugin is missing, ValueError when XLA cannot build the topology."""
  ok, reason = cuda_plugin_status()
  if not ok:
    raise RuntimeError(reason)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from jax.experimental import topologies

  try:
    desc = topologies.get_topology_desc(topology_name="", platform="cuda", target_config=target_config(chip),
                                        topology=f"1x{hosts}x{gpus_per_host}")
  except Exception as e:
    raise ValueError(f"--topology={chip}:{hosts}x{gpus_per_host} cannot be built: {str(e).splitlines()[0]}") from e
  return tuple(desc.devices)
