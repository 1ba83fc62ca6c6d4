"""What a run's checkpoint holds besides the arrays, and finding the step a rerun resumes from.

The host state records the step, the reset tracker, the counters, the data position of every process and the
shape of every train-state leaf; the shapes tell a damaged checkpoint (moved aside, the run falls back to an older
step) from a readable one of another model or optimizer (refused: the user's input, never moved).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from prorl_jax import algorithms
from prorl_jax.training import checkpointing, multihost


def state_shapes(state: Any) -> dict[str, list[int]]:
  """Every leaf's path and shape."""
  return {jax.tree_util.keystr(path): list(np.shape(x))
          for path, x in jax.tree_util.tree_flatten_with_path(state)[0]}


def host_state(*, step: int, tracker: algorithms.ResetTrackerState, counters: dict[str, int],
               shapes: dict[str, list[int]], data: dict[str, Any]) -> dict[str, Any]:
  """The JSON saved beside the train state (`data` is this process's pipeline state)."""
  return {"step": int(step), "tracker": tracker.to_dict(), "counters": dict(counters), "state_shapes": shapes,
          **multihost.data_state(data)}


@dataclasses.dataclass
class Resumed:
  step: int
  state: Any
  data: dict[str, Any]
  tracker: algorithms.ResetTrackerState
  counters: dict[str, int]


def restore_newest(checkpointer: checkpointing.Checkpointer, like: Any, shapes: dict[str, list[int]],
                   counter_names: tuple[str, ...]) -> Resumed | None:
  """The newest usable checkpoint restored onto `like` (the fresh train state), or None when there is none.
  Damaged newer steps are reported and moved aside (`checkpointing.restore_newest`); all processes agree."""

  def load(step: int) -> Resumed:
    host = checkpointer.restore_host(step)
    if host.get("step", step) != step:
      raise ValueError(f"its host state is of step {host['step']}")
    saved = host.get("state_shapes")
    if saved is not None and saved != shapes:
      path = next((p for p in sorted(set(saved) | set(shapes)) if saved.get(p) != shapes.get(p)), "?")
      raise checkpointing.CheckpointMismatchError(
          f"the checkpoint of step {step} in {checkpointer.directory} is of another model or optimizer "
          f"({path}: saved {saved.get(path)}, this config {shapes.get(path)}); use a new --workdir")
    data = multihost.restored_data_state(host, step)
    tracker = algorithms.ResetTrackerState.from_dict(host["tracker"])
    counters = {k: int(host["counters"][k]) for k in counter_names}
    try:
      state, _ = checkpointer.restore(step, like)
    except Exception as e:
      if saved is None:  # written before the shapes were recorded: it may be another run's, so never move it
        raise checkpointing.CheckpointMismatchError(
            f"the checkpoint of step {step} in {checkpointer.directory} cannot be restored "
            f"({checkpointing.describe_error(e)}); if the config changed, use a new --workdir") from e
      raise
    if int(jax.device_get(state.step)) != step:
      raise ValueError(f"its train state is of step {int(jax.device_get(state.step))}")
    return Resumed(step, state, data, tracker, counters)

  found = checkpointing.restore_newest(
      checkpointer, load,
      agree=lambda e: multihost.agree_on_failure(e, lambda why: RuntimeError(f"on another process: {why}")))
  return None if found is None else found[1]
