"""`python -m experiments.prorlv2` with kill hooks, for the chaos test: the process SIGKILLs itself at moments an
outside timer cannot hit reliably.

  CHAOS_KILL_IN_SAVE=N      inside its N-th checkpoint save: Orbax has started the (asynchronous) write and not
                            finished it, so the step's temporary folder is left half-written.
  CHAOS_KILL_AFTER_RESET=N  right after its N-th reference reset, before the step is logged or saved.
"""

import os
import pathlib
import runpy
import signal
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def _kill() -> None:
  os.kill(os.getpid(), signal.SIGKILL)


def _after_nth_call(owner, name: str, n: int, when=lambda result: True) -> None:
  original, calls = getattr(owner, name), [0]

  def wrapper(*args, **kwargs):
    result = original(*args, **kwargs)
    if when(result):
      calls[0] += 1
      if calls[0] == n:
        _kill()
    return result
  setattr(owner, name, wrapper)


if os.environ.get("CHAOS_KILL_IN_SAVE"):
  from prorl_jax.training import checkpointing
  # `save` returns True when it started a write (False: the step was saved before).
  _after_nth_call(checkpointing.Checkpointer, "save", int(os.environ["CHAOS_KILL_IN_SAVE"]), when=bool)
if os.environ.get("CHAOS_KILL_AFTER_RESET"):
  from prorl_jax import algorithms
  _after_nth_call(algorithms, "reset_reference", int(os.environ["CHAOS_KILL_AFTER_RESET"]))

sys.argv = ["experiments.prorlv2", *sys.argv[1:]]
runpy.run_module("experiments.prorlv2", run_name="__main__", alter_sys=True)
