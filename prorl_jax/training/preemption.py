"""Stopping on SIGTERM / SIGINT without losing work: what a TPU/GPU scheduler sends before it preempts a job.

The signal only sets a flag; the trainer looks at it at its safe points. Before a step's first optimizer update,
the step is abandoned (its rollouts are redone on resume, from the same data position and keys); once the update
has begun, the step finishes (with its validation when one is due). Then the last completed step is checkpointed
and the run exits with EXIT_PREEMPTED. A second SIGINT (Ctrl-C twice) stops at once, as Python's default does.
"""

from __future__ import annotations

import signal
import sys
import threading

from prorl_jax.training import multihost
from prorl_jax.training.errors import TrainingError

# sysexits.h EX_TEMPFAIL: "a temporary failure; the user is invited to retry" -- rerunning resumes.
EXIT_PREEMPTED = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(TrainingError):
  """The run stopped for a signal after checkpointing its last completed step."""

  def __init__(self, signal_name: str, step: int | None):
    where = (f"the checkpoint of step {step} is saved" if step is not None
             else "no step had completed, nothing to save")
    super().__init__(f"stopped by {signal_name}: {where}; rerun the same command to resume")
    self.signal_name, self.step = signal_name, step


class StepAbandoned(Exception):
  """Raised at a safe point inside a step whose work can be dropped (no parameter has changed yet)."""


class StopSignals:
  """Context manager recording STOP_SIGNALS (the main thread only: elsewhere Python cannot install handlers).

  `received` is the name of the first signal, or None.
  """

  def __init__(self, signals=STOP_SIGNALS):
    self.signals = tuple(signals)
    self.received: str | None = None
    self._previous: dict[int, object] = {}

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is threading.main_thread():
      for sig in self.signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def requested(self, collective: bool = True) -> bool:
    """Whether a stop signal arrived, on any process: processes stop together (the save is collective). Points
    that processes may reach a different number of times pass collective=False; they then look only on a
    single-process run."""
    if not multihost.is_multiprocess():
      return self.received is not None
    return collective and any(multihost.gather_json(self.received is not None))

  def _handle(self, signum: int, frame) -> None:
    name = signal.Signals(signum).name
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # asked twice: stop now, as without this handler
    if self.received is None:
      self.received = name
      print(f"\n{name} received: stopping at the next safe point and checkpointing the last completed step "
            f"(send SIGINT again to stop at once)", file=sys.stderr, flush=True)
