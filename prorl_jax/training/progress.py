"""The live progress line of a training run, and the profiler window around chosen steps."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Sequence

import jax

from prorl_jax.training import metrics_log


class Progress:
  """A tqdm bar whose postfix is the live metrics line (plain log lines when not on a terminal)."""

  def __init__(self, start: int, total: int, enabled: bool):
    self.total, self.bar = total, None
    self.enabled = enabled
    if enabled and sys.stderr.isatty():
      import tqdm
      self.bar = tqdm.tqdm(total=total, initial=start, dynamic_ncols=True, desc="prorl_jax")

  def update(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    line = metrics_log.live_line(step, self.total, metrics)
    if self.bar is not None:
      self.bar.set_postfix_str(line.split(" ", 2)[-1], refresh=False)
      self.bar.update(step - self.bar.n)
    else:
      print(line, file=sys.stderr, flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


@contextlib.contextmanager
def profile_steps(directory: str, steps: Sequence[int], step: int, result: Callable[[], Any]):
  """Starts a profiler trace into `directory` at the first of `steps` and stops it after the last, once `result()`
  (e.g. the params) is computed."""
  if steps and step == steps[0]:
    # No Python function tracing: it records every call (a million events in two tiny steps), the trace then
    # truncates and loses the phase annotations and device events that matter.
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0
    jax.profiler.start_trace(directory, profiler_options=options)
  try:
    yield
  finally:
    if steps and step == steps[-1]:
      jax.block_until_ready(result())
      jax.profiler.stop_trace()
