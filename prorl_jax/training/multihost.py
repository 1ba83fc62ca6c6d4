"""What the trainer exchanges between JAX processes in a multi-host run.

Each process samples, scores and filters rollouts for its own prompt shard on its own devices; the train step then
runs on global arrays built from every process's rows (`prorl_jax.parallel.global_batch`). Between the two, the
processes must agree on everything that shapes a jitted call or a decision: the micro-batch plan (from the global
masks), logged metrics (reduced over processes), validation scores (process 0's) and per-process data-iterator
state in checkpoints. In a single-process run every function here is the identity.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from prorl_jax import parallel
from prorl_jax.training.errors import TrainingError

# Metrics reduced by sum or max over processes; every other metric is averaged.
_SUMMED = ("rollout/generated_tokens", "dynamic_sampling/gen_batches", "reward/timeout", "reward/error",
           "throughput/tokens_per_s")
_MAXED = ("response_length/max",)


def is_multiprocess() -> bool:
  return jax.process_count() > 1


def check_run(c: Any, mesh: Mesh) -> None:
  """What a multi-process run needs: per-process prompt counts, and a mesh whose batch axes give every process its
  own block of rows (each process contributes the rollouts of its own prompts)."""
  processes = jax.process_count()
  for field, value in (("batch.prompts", c.batch.prompts), ("batch.gen_prompts", c.batch.gen_prompts)):
    if value % processes:
      raise TrainingError(f"config.{field} = {value} must be a multiple of the {processes} processes")
  rows = c.batch.prompts * c.rollout.n
  _, shards = parallel.data_shard(mesh, rows)
  if shards != processes:
    raise TrainingError(
        f"the mesh {parallel.describe(mesh)} gives the {processes} processes {shards} distinct blocks of batch rows; "
        "each process must own its own rows: put the processes along config.mesh.data or config.mesh.fsdp (e.g. "
        f"data={processes}) rather than tensor")


def local_sampler_mesh(c: Any, local_devices: Any = None) -> Mesh | None:
  """The sampler's mesh over this process's devices (default `jax.local_devices()`): rows over "data", heads over
  "tensor" where it fits."""
  local = list(jax.local_devices() if local_devices is None else local_devices)
  if len(local) == 1:
    return None
  tensor = c.mesh.tensor if c.mesh.tensor > 0 and len(local) % c.mesh.tensor == 0 else 1
  return parallel.make_mesh(dict(data=len(local) // tensor, fsdp=1, tensor=tensor), devices=local)


def local_replica(tree: Any, mesh: Mesh) -> Any:
  """A full copy of a (sharded, possibly multi-process) tree of arrays on this process's first device.

  Used to sample from the current params with a process-local sampler: the all-gather runs as one jitted
  collective, and only this process's copy is kept.
  """
  if not is_multiprocess():
    return tree
  replicated = NamedSharding(mesh, PartitionSpec())
  full = jax.jit(lambda t: t, out_shardings=jax.tree.map(lambda _: replicated, tree))(tree)
  return jax.tree.map(lambda x: x.addressable_shards[0].data, full)


def global_numpy(x: jax.Array) -> np.ndarray:
  """The whole value of a global array on every process (small per-row arrays: masks, lengths)."""
  if not is_multiprocess():
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def to_global(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array laid out by `sharding` from a host array every process holds in full."""
  if not is_multiprocess():
    return jax.device_put(x, sharding)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def place(tree: Any, shardings: Any) -> Any:
  """`jax.device_put(tree, shardings)`, also for leaves that live on this process only (e.g. fresh optimizer
  counters) in a multi-process run, where every process holds the same value of them."""
  if not is_multiprocess():
    return jax.device_put(tree, shardings)

  def one(x, sharding):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding)
    return to_global(np.asarray(x), sharding)

  return jax.tree.map(one, tree, shardings)


def reduce_metrics(metrics: dict[str, float]) -> dict[str, float]:
  """`metrics` of this process's rollouts reduced over processes (mean; sums for counts, max for maxima and
  times). A key some process lacks (e.g. a domain it drew no prompt of) is averaged over those that have it.
  Values travel as JSON: exact float64 (arrays would be cast to float32 without jax_enable_x64)."""
  if not is_multiprocess():
    return metrics
  every = gather_json({k: float(v) for k, v in metrics.items() if _is_number(v)})
  out = dict(metrics)
  for k in sorted(set().union(*every)):
    column = np.array([m.get(k, np.nan) for m in every], np.float64)
    if k in _SUMMED:
      out[k] = float(np.nansum(column))
    elif k in _MAXED or k.startswith("time/"):
      out[k] = float(np.nanmax(column))
    else:
      out[k] = float(np.nanmean(column))
  return out


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def from_first_process(metrics: dict[str, float]) -> dict[str, float]:
  """Process 0's `metrics`, so that decisions taken on them (reference resets, best checkpoints) are identical
  everywhere."""
  if not is_multiprocess():
    return metrics
  return gather_json(metrics)[0]


def gather_json(obj: Any) -> list[Any]:
  """Every process's JSON-serialisable `obj`, in process order."""
  if not is_multiprocess():
    return [obj]
  data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.array([len(data)], np.int32))).reshape(-1)
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:len(data)] = data
  every = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
  return [json.loads(row[:n].tobytes().decode()) for row, n in zip(every, lengths)]
