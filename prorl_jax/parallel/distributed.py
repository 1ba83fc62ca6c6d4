"""Multi-host start-up and the per-process view of a sharded batch.

Every process runs the same program. `maybe_initialize(config)` joins them (`jax.distributed.initialize`) when the
config asks for it or the environment shows a multi-process launch; after that `jax.devices()` lists every
process's devices and a mesh spans them all. Each process then loads only the rows of a batch that land on its own
devices (`process_rows`, `data_shard`) and `global_batch` assembles the global `jax.Array` from those local rows.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from prorl_jax.errors import ConfigError
from prorl_jax.parallel import rules
from prorl_jax.parallel.mesh import batch_axes

_log = logging.getLogger(__name__)


def _int_env(name: str) -> int:
  try:
    return int(os.environ.get(name, "0").split("(")[0])
  except ValueError:
    return 0


def launch_environment() -> str:
  """The multi-process launcher this process runs under, or "" for a single-process run.

  Recognised: JAX_COORDINATOR_ADDRESS (explicit), Slurm with more than one task, Open MPI with more than one rank,
  and multi-host Cloud TPU slices (the environments `jax.distributed.initialize()` can configure itself from).
  """
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return "JAX_COORDINATOR_ADDRESS"
  if "SLURM_JOB_ID" in os.environ and max(_int_env("SLURM_STEP_NUM_TASKS"), _int_env("SLURM_NTASKS")) > 1:
    return "slurm"
  if "OMPI_MCA_orte_hnp_uri" in os.environ and _int_env("OMPI_COMM_WORLD_SIZE") > 1:
    return "open_mpi"
  if len([h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    return "cloud_tpu"
  return ""


def maybe_initialize(config: Any) -> bool:
  """Calls `jax.distributed.initialize` if `config.distributed.initialize` or `launch_environment()` says so.

  Must run before anything touches a JAX device. Unset fields (`coordinator_address` "", `num_processes` 0,
  `process_id` -1) are left to JAX's cluster auto-detection. Returns True if this call initialised; False for a
  single-process run or when already initialised. Raises ConfigError naming the field for bad values or a
  failed start-up.
  """
  d = config.distributed if hasattr(config, "distributed") else config
  if d.num_processes < 0:
    raise ConfigError(f"config.distributed.num_processes must be >= 0 (0 = auto-detect), got {d.num_processes}")
  if d.process_id < -1 or (d.num_processes and d.process_id >= d.num_processes):
    raise ConfigError(f"config.distributed.process_id must be -1 (auto-detect) or in [0, num_processes), got "
                      f"{d.process_id} with num_processes={d.num_processes}")
  reason = "config.distributed.initialize" if d.initialize else launch_environment()
  if not reason:
    return False
  if jax.distributed.is_initialized():
    _log.info("jax.distributed already initialised; process %d of %d", jax.process_index(), jax.process_count())
    return False
  kwargs = dict(coordinator_address=d.coordinator_address or None, num_processes=d.num_processes or None,
                process_id=d.process_id if d.process_id >= 0 else None)
  # CPU processes exchange collectives over gloo (the default CPU client has none); accelerators are unaffected.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**kwargs)
  except (RuntimeError, ValueError) as e:
    raise ConfigError(
        f"jax.distributed.initialize failed ({reason}): {e}. Call it before any JAX computation, and set "
        "config.distributed.coordinator_address (host:port of process 0), num_processes and process_id unless "
        "the launcher (Slurm, Open MPI, Cloud TPU) provides them") from e
  _log.info("jax.distributed initialised via %s: process %d of %d, %d local / %d global devices", reason,
            jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def process_rows(mesh: Mesh, global_rows: int) -> slice:
  """The contiguous rows `[start, stop)` of a `global_rows`-row batch (split over the mesh's batch axes) that this
  process's devices hold, i.e. the rows this process must load."""
  sharding = NamedSharding(mesh, rules.rows_spec((global_rows,), mesh))
  indices = sharding.addressable_devices_indices_map((global_rows,)).values()
  spans = sorted({(s[0].start or 0, global_rows if s[0].stop is None else s[0].stop) for s in indices})
  start, stop = spans[0][0], spans[0][1]
  for a, b in spans[1:]:
    if a != stop:
      raise ValueError(f"this process's devices hold non-contiguous rows {spans} of the batch; order the mesh's "
                       "devices so that each process owns a contiguous block of the batch axes")
    stop = b
  return slice(start, stop)


def data_shard(mesh: Mesh, global_rows: int) -> tuple[int, int]:
  """(shard_index, shard_count) of this process's rows, for a data loader's per-process sharding (e.g.
  `grain.ShardOptions(shard_index, shard_count)`); (0, 1) in a single-process run."""
  rows = process_rows(mesh, global_rows)
  local = rows.stop - rows.start
  if global_rows % local or rows.start % local:
    raise ValueError(f"rows {rows} of {global_rows} are not an even shard")
  return rows.start // local, global_rows // local


def global_batch(local: Any, mesh: Mesh) -> Any:
  """A tree of global `jax.Array`s, rows split over the mesh's batch axes, from this process's local rows (every
  process passes its `process_rows` slice, all with the same shapes)."""
  axes = batch_axes(mesh)

  def one(x):
    x = np.asarray(x)
    global_shape = (x.shape[0] * _row_share(mesh, axes),) + x.shape[1:]
    sharding = NamedSharding(mesh, rules.rows_spec(global_shape, mesh))
    return jax.make_array_from_process_local_data(sharding, x, global_shape)

  return jax.tree.map(one, local)


def _row_share(mesh: Mesh, axes: tuple[str, ...]) -> int:
  """How many processes' row blocks make up the batch: total row shards / row shards on this process."""
  total = 1
  for a in axes:
    total *= int(mesh.shape[a])
  names = list(mesh.axis_names)
  local = {tuple(int(i) for i, n in zip(idx, names) if n in axes)
           for idx in np.ndindex(mesh.devices.shape) if mesh.devices[idx].process_index == jax.process_index()}
  return total // max(len(local), 1)
