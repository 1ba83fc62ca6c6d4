"""Where a run's numbers go: `metrics.jsonl` (one JSON object per step), TensorBoard events, a live line.

On resume from step k, lines and events after k are dropped first, so the files read as one run.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable

import numpy as np

METRICS_FILE = "metrics.jsonl"

# Short names for the live progress line: (metric key, label, format).
LIVE_FIELDS = (
    ("reward/mean", "reward", "{:.3f}"),
    ("pass_rate", "pass", "{:.2f}"),
    ("kl", "kl", "{:.2e}"),
    ("entropy", "ent", "{:.3f}"),
    ("response_length/mean", "len", "{:.1f}"),
    ("clip_frac", "clip", "{:.3f}"),
    ("dynamic_sampling/kept_frac", "kept", "{:.2f}"),
    ("throughput/tokens_per_s", "tok/s", "{:.0f}"),
    ("eval/score@1", "eval", "{:.3f}"),
)


def _plain(value: Any) -> Any:
  """JSON-safe scalar: numpy/jax scalars to Python, NaN/Inf to strings JSON can hold."""
  if hasattr(value, "item") and np.ndim(value) == 0:
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  path = os.path.join(os.fspath(workdir), METRICS_FILE)
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line:
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:  # A line cut short by a kill: the run resumes before it anyway.
          break
  return rows


def series(rows: Iterable[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
  """(steps, values) of the rows where `key` is a finite number (NaN/Inf are logged as strings)."""
  xs, ys = [], []
  for row in rows:
    value = row.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
      xs.append(int(row["step"]))
      ys.append(float(value))
  return xs, ys


def reset_steps(rows: Iterable[dict[str, Any]]) -> list[int]:
  """Steps at which the `ref_resets` counter went up."""
  steps, last = [], 0
  for step, count in zip(*series(rows, "ref_resets")):
    if count > last:
      steps.append(step)
      last = count
  return steps


class MetricsWriter:
  """Appends per-step metrics to `workdir/metrics.jsonl` and TensorBoard event files in `workdir/tensorboard`.

  Args:
    workdir: the run directory.
    resume_step: the checkpoint step a resumed run continues from; rows with a larger step are removed.
      None for a fresh run (an existing file is then replaced).
    tensorboard: also write TensorBoard events (tensorboardX).
  """

  def __init__(self, workdir: str | os.PathLike, *, resume_step: int | None = None, tensorboard: bool = True):
    self.workdir = os.fspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.path = os.path.join(self.workdir, METRICS_FILE)
    kept = [r for r in read_metrics(self.workdir) if resume_step is not None and r.get("step", 0) <= resume_step]
    with open(self.path + ".tmp", "w") as f:
      for row in kept:
        f.write(json.dumps(row) + "\n")
    os.replace(self.path + ".tmp", self.path)
    self._file = open(self.path, "a", buffering=1)
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # Optional heavy import.
      purge = None if resume_step is None else resume_step + 1
      self._tb = SummaryWriter(os.path.join(self.workdir, "tensorboard"), purge_step=purge, flush_secs=10)

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    row = {"step": int(step)}
    row.update({k: _plain(v) for k, v in sorted(metrics.items())})
    self._file.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for key, value in row.items():
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
          # TensorBoard tags allow no '@' (tensorboardX would rename and log every time): pass@4 -> pass_at_4.
          self._tb.add_scalar(key.replace("@", "_at_"), value, global_step=int(step))

  def close(self) -> None:
    self._file.close()
    if self._tb is not None:
      self._tb.close()


def live_line(step: int, total: int, metrics: dict[str, Any], fields: Iterable = LIVE_FIELDS) -> str:
  """One compact status line, e.g. `step 12/200 reward 0.412 pass 0.38 kl 1.2e-03 ...`."""
  parts = [f"step {step}/{total}"]
  for key, label, fmt in fields:
    value = metrics.get(key)
    if isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(float(value)):
      parts.append(f"{label} {fmt.format(float(value))}")
  return " ".join(parts)
