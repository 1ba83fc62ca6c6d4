"""Orbax checkpoints of the training run: the device train state plus a JSON of host-side state.

Keeps the latest few checkpoints for resume and the best by validation score (for reference resets that take
the best policy, and for users). Saves are asynchronous: `save` returns once the arrays are copied off the
training path, and the write finishes in the background.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from orbax.checkpoint._src.checkpoint_managers import preservation_policy as preservation

_STATE, _HOST = "train_state", "host_state"


class NonFiniteStateError(RuntimeError):
  """Refused to checkpoint a state with NaN/Inf parameters."""


def _score(metrics: Any) -> float:
  return float(metrics["score"])


class Checkpointer:
  """Saves and restores (train_state pytree, host_state dict) pairs under `directory`.

  Args:
    directory: where step folders go (created if missing).
    keep_latest: how many of the newest checkpoints to keep (resume needs one).
    keep_best: how many of the best-scoring checkpoints to keep in addition.
    async_save: write in a background thread.
  """

  def __init__(self, directory: str | os.PathLike, *, keep_latest: int = 2, keep_best: int = 1,
               async_save: bool = True):
    policy = preservation.AnyPreservationPolicy([
        preservation.LatestN(n=keep_latest),
        preservation.BestN(get_metric_fn=_score, reverse=False, n=keep_best, keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        best_fn=_score, best_mode="max", keep_checkpoints_without_metrics=True, preservation_policy=policy,
        enable_async_checkpointing=async_save, create=True)
    self.directory = os.path.abspath(os.fspath(directory))
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=(_STATE, _HOST))

  def save(self, step: int, train_state: Any, host_state: dict[str, Any], score: float | None = None) -> None:
    """Checkpoints `train_state` at `step`; `score` (higher is better) ranks it for `best_step`.

    Raises NonFiniteStateError (and writes nothing) if any floating-point leaf holds NaN or Inf.
    """
    if not bool(_all_finite(train_state)):
      raise NonFiniteStateError(f"step {step}: the train state holds NaN/Inf values; not checkpointing it")
    metrics = {"score": float(score)} if score is not None else None
    self._manager.save(step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardSave(train_state),
                                                        _HOST: ocp.args.JsonSave(host_state)}),
                       metrics=metrics, force=True)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The best-scoring step among checkpoints saved with a score (None if none was)."""
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Restores (train_state, host_state) of `step` onto the shardings/dtypes of `abstract_state`.

    `abstract_state` is a pytree of `jax.ShapeDtypeStruct` (with `sharding`) or arrays, e.g. from
    `jax.eval_shape` or the freshly initialised state; a different mesh than the one saved is fine.
    """
    abstract_state = jax.tree.map(_as_abstract, abstract_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        _STATE: ocp.args.StandardRestore(abstract_state), _HOST: ocp.args.JsonRestore()}))
    return restored[_STATE], dict(restored[_HOST] or {})

  def restore_params(self, step: int, abstract_params: Any) -> Any:
    """Restores only the policy params of `step` (onto `abstract_params`' shardings), not the whole state."""
    abstract_params = jax.tree.map(_as_abstract, abstract_params)
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        _STATE: ocp.args.PyTreeRestore(
            item={"params": abstract_params}, partial_restore=True,
            restore_args=ocp.checkpoint_utils.construct_restore_args({"params": abstract_params}))}))
    return restored[_STATE]["params"]

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  """One program for the whole tree: per-leaf checks of a sharded state would flood XLA:CPU with collectives."""
  checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)


def _as_abstract(x: Any) -> Any:
  sharding = getattr(x, "sharding", None)
  if sharding is None:  # Restore onto the default device rather than the saved topology.
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)



def resolve_orbax_checkpoint(path: str | os.PathLike) -> tuple[str, int] | None:
  """(checkpoint directory, step) when `path` is a trainer workdir, its `checkpoints` directory or a step folder
  inside it (optionally `PATH@STEP`); None when it is not an Orbax checkpoint of ours."""
  text = os.fspath(path)
  step = None
  if "@" in text and text.rsplit("@", 1)[1].isdigit():
    text, step_text = text.rsplit("@", 1)
    step = int(step_text)
  text = os.path.abspath(os.path.expanduser(text))
  candidates = [os.path.join(text, "checkpoints"), text]
  if os.path.basename(text).isdigit():
    candidates.append(os.path.dirname(text))
    step = int(os.path.basename(text)) if step is None else step
  for directory in candidates:
    if os.path.isdir(directory) and any(d.isdigit() for d in os.listdir(directory)):
      if step is None:
        step = max(int(d) for d in os.listdir(directory) if d.isdigit())
      return directory, step
  return None
