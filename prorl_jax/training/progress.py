"""The live progress line of a training run."""

from __future__ import annotations

import sys
from typing import Any

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
