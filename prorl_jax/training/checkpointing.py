"""Orbax checkpoints of the training run: the device train state plus a JSON of host-side state.

Keeps the latest few checkpoints for resume and the best by validation score (for reference resets that take
the best policy, and for users). Saves are asynchronous: `save` returns once the arrays are copied off the
training path, and the write finishes in the background.

Faults: Orbax writes a step into a temporary folder and renames it when complete, so a kill during a save leaves
the previous steps as they were. A step that cannot be read anyway (a half-copied run, a bad disk, a filesystem
without atomic rename) is found by `restore_newest`, reported in one line and moved aside to
`<directory>_unusable/`, never deleted; a save that fails for lack of space raises `CheckpointWriteError` naming
the path and the size needed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from orbax.checkpoint._src.checkpoint_managers import preservation_policy as preservation

from prorl_jax.training.errors import TrainingError

_STATE, _HOST = "train_state", "host_state"
_log = logging.getLogger("prorl_jax.checkpointing")


class NonFiniteStateError(RuntimeError):
  """Refused to checkpoint a state with NaN/Inf parameters."""


class UnusableCheckpointError(TrainingError):
  """No checkpoint step in a directory can be read; the message lists each step and what is wrong with it."""


class CheckpointMismatchError(TrainingError):
  """A readable checkpoint written for another model, optimizer or number of processes (never moved aside)."""


class CheckpointWriteError(TrainingError):
  """A checkpoint could not be written (e.g. the disk is full); the steps saved before are intact."""


def describe_error(e: BaseException, limit: int = 200) -> str:
  """`Type: first line of the message`, at most `limit` characters: Orbax/TensorStore errors run to pages."""
  lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
  text = f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _no_space(e: BaseException) -> bool:
  """Whether `e` or an exception it wraps is ENOSPC (TensorStore reports it only in its message)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e) \
        or "Disk quota exceeded" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


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
    self._pending: tuple[int, int] | None = None  # (step, bytes) of the save being written in the background

  def save(self, step: int, train_state: Any, host_state: dict[str, Any], score: float | None = None) -> bool:
    """Checkpoints `train_state` at `step`; `score` (higher is better) ranks it for `best_step`. Returns False,
    writing nothing, when `step` is already saved (a resumed run reaching a step saved before it was killed).

    Raises NonFiniteStateError (and writes nothing) if any floating-point leaf holds NaN or Inf, and
    CheckpointWriteError when this or the previous (asynchronous) save failed for lack of space.
    """
    self.check()
    if step in self.all_steps():
      return False
    if not bool(_all_finite(train_state)):
      raise NonFiniteStateError(f"step {step}: the train state holds NaN/Inf values; not checkpointing it")
    metrics = {"score": float(score)} if score is not None else None
    size = sum(x.nbytes for x in jax.tree.leaves(train_state) if hasattr(x, "nbytes"))
    self.wait()  # the previous save's bytes are on disk (Orbax waits for it anyway) and old steps removed
    free = shutil.disk_usage(self.directory).free
    if free < size:  # refuse before writing: a write that runs out of space leaves Orbax's threads in a mess
      raise CheckpointWriteError(self._no_space(step, size, free))
    self._pending = (step, size)
    with self._reporting_write_errors():
      self._manager.save(step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardSave(train_state),
                                                          _HOST: ocp.args.JsonSave(host_state)}),
                         metrics=metrics, force=True)
    return True

  def check(self) -> None:
    """Raises CheckpointWriteError if a background save has failed (cheap: call it every step)."""
    with self._reporting_write_errors():
      self._manager.check_for_errors()

  @contextlib.contextmanager
  def _reporting_write_errors(self):
    """A write that failed for lack of space becomes a CheckpointWriteError naming the path, the size needed and
    the space free, once the partial temporary folder (which Orbax never renames into a step) is removed."""
    try:
      yield
    except Exception as e:  # Orbax and TensorStore wrap the OSError in their own types
      if not _no_space(e):
        raise
      step, size = self._pending or (None, 0)
      self._pending = None
      # An asynchronous save's failure surfaces in a later call: the partial folder names the failed step.
      partial = [n for n in os.listdir(self.directory) if ".orbax-checkpoint-tmp" in n]
      steps = [int(n.split(".")[0]) for n in partial if n.split(".")[0].isdigit()]
      step = min(steps) if steps else step
      for name in partial:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
      raise CheckpointWriteError(self._no_space(step, size, shutil.disk_usage(self.directory).free)) from e

  def _no_space(self, step: int | None, size: int, free: int) -> str:
    steps = self.all_steps()
    kept = f"the checkpoints of steps {steps} are intact" if steps else "no checkpoint had been saved before"
    return (f"no space left on the device for the checkpoint of step {step} in {self.directory}: it needs about "
            f"{size / 2**20:.1f} MiB and {free / 2**20:.1f} MiB are free; {kept}. Free space (or lower "
            f"checkpoint.keep_latest) and rerun the same command to resume")

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The best-scoring step among checkpoints saved with a score (None if none was)."""
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def restore_host(self, step: int) -> dict[str, Any]:
    """Only the host-state JSON of `step` (cheap: no arrays are read)."""
    restored = self._manager.restore(step, args=ocp.args.Composite(**{_HOST: ocp.args.JsonRestore()}))
    host = restored[_HOST]
    if not isinstance(host, dict):
      raise ValueError(f"host state is {type(host).__name__}, not a JSON object")
    return host

  def move_aside(self, step: int) -> str:
    """Moves the folder of `step` to `<directory>_unusable/<step>[.n]` (kept for inspection); returns where."""
    dest_dir = self.directory.rstrip(os.sep) + "_unusable"
    os.makedirs(dest_dir, exist_ok=True)
    dest, n = os.path.join(dest_dir, str(step)), 1
    while os.path.exists(dest):
      dest, n = os.path.join(dest_dir, f"{step}.{n}"), n + 1
    shutil.move(os.path.join(self.directory, str(step)), dest)
    self._manager.reload()
    return dest

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
    """Blocks until pending asynchronous saves are on disk; CheckpointWriteError if one failed for space."""
    with self._reporting_write_errors():
      self._manager.wait_until_finished()

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self._manager.close()


def attempt_read(read: Callable[[], Any]) -> tuple[Any, str | None]:
  """(read(), None), or (None, why) with `why` the failure in one line; a TrainingError (the user's input, not
  a fault of the files) propagates.

  A failed TensorStore read leaves callbacks for an event loop Orbax has closed; Python would print each as an
  'Exception ignored' traceback when it runs, up to the interpreter's exit. They say nothing the one-line report
  does not, so after a failed read they are silenced (only they: other unraisable exceptions still print)."""
  try:
    return read(), None
  except TrainingError:
    raise
  except Exception as e:  # noqa: BLE001 - any failure to read a step makes that step unusable
    why = describe_error(e)
  _silence_closed_loop_callbacks()
  return None, why


def _silence_closed_loop_callbacks() -> None:
  previous = sys.unraisablehook
  if getattr(previous, "_prorl_closed_loop_filter", False):
    return

  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value)):
      previous(unraisable)
  hook._prorl_closed_loop_filter = True
  sys.unraisablehook = hook


def restore_newest(checkpointer: Checkpointer, load: Callable[[int], Any], *,
                   agree: Callable[[Exception | None], Exception | None] = lambda e: e,
                   move_aside: bool = True, report: Callable[[str], None] | None = None,
                   using: str = "resuming from") -> tuple[int, Any] | None:
  """(step, load(step)) for the newest step that `load` reads without error; None when there is no step.

  Newer steps that fail are reported in one line each (`report`, default stderr) and, once a usable step is
  found and `move_aside`, moved to `<directory>_unusable/` so that later saves and resumes skip them. When no
  step is usable nothing is moved and UnusableCheckpointError lists every step and its fault. `load` raises
  CheckpointMismatchError (or any TrainingError) for a readable checkpoint of another run: that is the user's
  input, not a fault of the checkpoint, and stops the search. `agree` makes processes take one decision
  (a multi-process restore is collective): it maps this process's failure to the one every process acts on.
  """
  report = report or (lambda line: print(line, file=sys.stderr))
  bad: list[tuple[int, str]] = []
  for step in sorted(checkpointer.all_steps(), reverse=True):
    loaded, why = attempt_read(lambda: load(step))
    failure = agree(None if why is None else RuntimeError(why))
    if failure is None:
      for bad_step, why in bad:
        where = checkpointer.move_aside(bad_step) if move_aside and jax.process_index() == 0 else None
        report(f"checkpoint step {bad_step} in {checkpointer.directory} is unusable ({why})"
               + (f"; moved to {where}" if where else "") + f"; {using} step {step}")
      if move_aside and bad and jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("prorl_jax checkpoints moved aside")
        checkpointer._manager.reload()
      return step, loaded
    bad.append((step, why or str(failure)))
  if bad:
    listing = "; ".join(f"step {s}: {why}" for s, why in bad)
    raise UnusableCheckpointError(
        f"no usable checkpoint in {checkpointer.directory} ({listing}); move the directory away to start afresh")
  return None


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



def resolve_orbax_checkpoint(path: str | os.PathLike) -> tuple[str, int | None] | None:
  """(checkpoint directory, step) when `path` is a trainer workdir, its `checkpoints` directory or a step folder
  inside it (optionally `PATH@STEP`); the step is None when `path` names none (the newest usable one is meant).
  None when `path` is not an Orbax checkpoint of ours."""
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
      return directory, step
  return None
