"""Where a run's arrays live and which programs it compiles: the mesh, the train-state and batch shardings, the
jitted step functions and the sampler.

Built once by the `Trainer` over the attached devices, and by the planner (`prorl_jax.planning`) over the
compile-only devices of a topology it does not have, so that what the planner compiles is what the trainer runs.
Every run has a mesh and shardings, a one-device run a mesh of one device: there is no unsharded path.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from prorl_jax import models, parallel, rollout
from prorl_jax.training import multihost, update

GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class RunLayout:
  """A run's placement on its devices.

  Attributes:
    mesh: the training mesh ("data", "fsdp", "tensor") over every process's devices (one device: a mesh of one).
    processes: host processes of the run (each samples its own prompts on its own devices).
    state_sharding, batch_sharding: NamedShardings of the `TrainState` and of a mini-batch `TrainBatch`.
    step_fns: the jitted log-prob and update functions.
    sampler: the rollout sampler (over this process's devices when there are several processes).
    loss_settings: the static loss configuration the step functions close over.
  """

  mesh: Mesh
  processes: int
  state_sharding: Any
  batch_sharding: Any
  step_fns: update.StepFunctions
  sampler: rollout.Sampler
  loss_settings: update.LossSettings


def run_mesh(c: Any, devices: Sequence[Any] | None = None) -> Mesh:
  """The training mesh of config `c` over `devices` (default every device; `config.mesh.devices` keeps the first N)."""
  devices = list(jax.devices() if devices is None else devices)
  if c.mesh.devices:
    devices = devices[:c.mesh.devices]
  return parallel.make_mesh(c.mesh, devices=devices)


def train_batch_shapes(c: Any, rows: int | None = None) -> update.TrainBatch:
  """Abstract `TrainBatch` of `rows` sequences (default one mini-batch: `mini_batch_prompts x n`) at full width; with
the sampler's log-probs when rollout correction is on."""
  rows = rows or c.batch.mini_batch_prompts * c.rollout.n
  seq = c.data.max_prompt_length + c.rollout.max_new_tokens
  per_token = ("response_mask", "advantages", "old_logp", "ref_logp")
  per_token += ("rollout_logp",) if c.algorithm.rollout_correction.level else ()
  return update.TrainBatch(**{
      "input_ids": jax.ShapeDtypeStruct((rows, seq), jnp.int32),
      "attention_mask": jax.ShapeDtypeStruct((rows, seq), jnp.bool_),
      **{k: jax.ShapeDtypeStruct((rows, c.rollout.max_new_tokens), jnp.float32) for k in per_token}})


def rollout_budget(c: Any, device_bytes_limit: int | None = None) -> int | None:
  """The sampler's memory budget per device: `rollout.memory_budget_gb`, else the sampler's default share of
  `device_bytes_limit` (None: the sampler reads its own device)."""
  if c.rollout.memory_budget_gb:
    return int(c.rollout.memory_budget_gb * GiB)
  return rollout.default_memory_budget(device_bytes_limit) if device_bytes_limit else None


def build_layout(c: Any, model_config: models.Qwen2Config, state: Any, optimizer: optax.GradientTransformation, *,
                 mesh: Mesh, pad_id: int, processes: int = 1, local_devices: Sequence[Any] | None = None,
                 device_bytes_limit: int | None = None) -> RunLayout:
  """Shardings, step functions and sampler of a run on `mesh`.

  Args:
    state: the `TrainState`, or its abstract shapes (`jax.eval_shape`).
    processes, local_devices: host processes and this process's devices; with several processes each samples on its
      own devices (`multihost.sampler_mesh`).
    device_bytes_limit: memory per device, for the default rollout budget (None: read from the device).
  """
  loss_settings = update.LossSettings.from_config(c, prompt_len=c.data.max_prompt_length)
  state_sharding = parallel.train_state_shardings(model_config, state, optimizer, mesh)
  batch_sharding = parallel.rows_shardings(train_batch_shapes(c), mesh)
  step_fns = update.build_step_functions(model_config, loss_settings, optimizer, mesh=mesh,
                                         state_sharding=state_sharding)
  sampler = rollout.Sampler(model_config, pad_id=pad_id, mesh=multihost.sampler_mesh(c, mesh, processes, local_devices),
                            batching=c.rollout.batching, memory_budget_bytes=rollout_budget(c, device_bytes_limit))
  return RunLayout(mesh=mesh, processes=processes, state_sharding=state_sharding,
                   batch_sharding=batch_sharding, step_fns=step_fns, sampler=sampler, loss_settings=loss_settings)
