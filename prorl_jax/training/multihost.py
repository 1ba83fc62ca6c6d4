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
_SUMMED = ("rollout/generated_tokens", "rollout/samples", "dynamic_sampling/gen_batches", "reward/timeout",
           "reward/error", "throughput/tokens_per_s")
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


def sampler_mesh(c: Any, mesh: Mesh, processes: int, local_devices: Any = None) -> Mesh:
  """The sampler's mesh: the training mesh in a one-process run; with several processes (of a run, or of a topology
  being planned) one over this process's devices (default `jax.local_devices()`), rows over "data", heads over
  "tensor" where it fits, since each process samples its own prompts."""
  if processes == 1:
    return mesh
  local = list(jax.local_devices() if local_devices is None else local_devices)
  tensor = c.mesh.tensor if c.mesh.tensor > 0 and len(local) % c.mesh.tensor == 0 else 1
  return parallel.make_mesh(dict(data=len(local) // tensor, fsdp=1, tensor=tensor), devices=local)


def process_key(key: jax.Array) -> jax.Array:
  """This process's sampling key: each process samples different prompts, so each gets its own stream."""
  return jax.random.fold_in(key, jax.process_index()) if is_multiprocess() else key


def data_state(state: dict[str, Any]) -> dict[str, Any]:
  """The checkpoint's host entry for the data position(s): every process's own (Orbax writes the JSON from
  process 0), or the one of a single-process run."""
  if is_multiprocess():
    return {"data_by_process": gather_json(state)}
  return {"data": state}


def restored_data_state(host: dict[str, Any], step: int) -> dict[str, Any]:
  """This process's data position from a checkpoint's host entry (`data_state`); a TrainingError when the
  checkpoint was written by a different number of processes."""
  processes = jax.process_count()
  if "data_by_process" in host:
    states = host["data_by_process"]
    if len(states) != processes:
      raise TrainingError(f"the checkpoint of step {step} holds data positions of {len(states)} processes; "
                          f"resume it with {len(states)} processes (this run has {processes})")
    return states[jax.process_index()]
  if processes > 1:
    raise TrainingError(f"the checkpoint of step {step} is from a single-process run; resume it with one process")
  return host["data"]


def agree_on_failure(failure: Exception | None, make_error) -> Exception | None:
  """`failure`, or `make_error(reasons)` when another process failed: one process failing stops all of them
  together (the save that follows is collective)."""
  if not is_multiprocess():
    return failure
  reasons = [r for r in gather_json(str(failure or "")) if r]
  return make_error("; ".join(reasons)) if reasons and failure is None else failure


def device_batch(arrays: dict[str, np.ndarray], group_ids: np.ndarray, prompts_per_process: int,
                 batch_sharding: Any, mesh: Mesh) -> tuple[dict[str, jax.Array], dict[str, np.ndarray]]:
  """(device arrays of a step's training rows, host copies of the masks, rewards and group ids over all rows).

  Several processes each contribute their own rows (group ids offset to stay unique) to global arrays, and the
  host copies are gathered, so every process plans the same micro-batches and resolves the same groups."""
  keys = ("input_ids", "attention_mask", "response_mask", "rollout_logp")
  if not is_multiprocess():
    dev = {k: jax.device_put(arrays[k], getattr(batch_sharding, k if k != "rollout_logp" else "old_logp"))
           for k in keys}
    dev.update(rewards=jax.device_put(arrays["rewards"]), group_ids=jax.device_put(group_ids))
    return dev, {"attention_mask": arrays["attention_mask"], "response_mask": arrays["response_mask"],
                 "rewards": arrays["rewards"], "group_ids": group_ids}
  local = {k: arrays[k] for k in keys + ("rewards",)}
  local["group_ids"] = group_ids + jax.process_index() * prompts_per_process
  dev = parallel.global_batch(local, mesh)
  return dev, {k: global_numpy(dev[k]) for k in ("attention_mask", "response_mask", "rewards", "group_ids")}


def gather_results(results: list[Any], to_json, from_json) -> list[Any]:
  """Every process's evaluation results (each sampled its share of the problems), sorted by problem index."""
  if not is_multiprocess():
    return results
  gathered = gather_json([to_json(r) for r in results])
  return sorted((from_json(r) for part in gathered for r in part), key=lambda r: r.index)


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
