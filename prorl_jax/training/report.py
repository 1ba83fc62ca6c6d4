"""What a run writes beside its metrics: at the start the memory estimate and the resolved config; at the end a PNG
of the training curves (reference resets marked) and a short text summary."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

from prorl_jax import parallel
from prorl_jax.training import memory, mfu
from prorl_jax.training.metrics_log import reset_steps, series

_log = logging.getLogger("prorl_jax.trainer")


def write_run_files(config: Any, model_config: Any, mesh: Any, directory: str) -> float:
  """Writes `memory_estimate.json` and `config.json` to `directory`; returns the device's peak FLOP/s (for MFU)."""
  peak_flops, peak_source = mfu.peak_flops(mesh.devices.flat[0], config.model.compute_dtype)
  estimate = memory.estimate_run(config, model_config, mesh)
  estimate.update(mesh=parallel.describe(mesh), peak_flops_per_device=peak_flops, peak_flops_source=peak_source)
  with open(os.path.join(directory, "memory_estimate.json"), "w") as f:
    json.dump(estimate, f, indent=2, default=str)
  _log.info("mesh %s; estimated peak device memory %.2f GiB", estimate["mesh"], estimate["peak_gib"])
  with open(os.path.join(directory, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  return peak_flops

PANELS = (
    ("reward/mean", "reward (mean)"),
    ("eval/score@1", "validation score@1 (mean score)"),
    ("response_length/mean", "response length (tokens)"),
    ("kl", "KL to reference"),
    ("entropy", "entropy"),
    ("length_penalty/active", "cosine length penalty on"),
)


def plot_training_curves(rows: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> str:
  """Writes a 2×3 grid of curves from metrics rows to `path` (PNG) and returns the path."""
  import matplotlib  # Imported lazily: plotting is the only user.
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
  resets = reset_steps(rows)
  for ax, (key, label) in zip(axes.flat, PANELS):
    xs, ys = series(rows, key)
    ax.plot(xs, ys, marker="o" if key.startswith("eval/") else None, markersize=3, linewidth=1.2)
    for i, step in enumerate(resets):
      ax.axvline(step, color="tab:red", linestyle="--", linewidth=0.8, label="reference reset" if i == 0 else None)
    ax.set_title(label)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if resets and key == PANELS[0][0]:
      ax.legend(loc="best", fontsize=8)
  fig.suptitle(title or "prorl_jax training")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return os.fspath(path)


def summary_text(rows: Sequence[dict[str, Any]]) -> str:
  """A few lines: steps run, first and last validation score@1 and pass@1, reward trend, resets, skipped
  updates."""
  if not rows:
    return "no metrics were logged"
  lines = [f"steps: {rows[-1]['step']}"]
  for key, label in (("eval/score@1", "validation score@1 (mean score)"),
                     ("eval/pass@1", "validation pass@1 (fully correct)")):
    xs, ys = series(rows, key)
    if ys:
      best = max(range(len(ys)), key=ys.__getitem__)
      lines.append(f"{label}: {ys[0]:.3f} at step {xs[0]} -> {ys[-1]:.3f} at step {xs[-1]} "
                   f"(best {ys[best]:.3f} at step {xs[best]}, change {ys[-1] - ys[0]:+.3f})")
  for key, label in (("reward/mean", "train reward"), ("response_length/mean", "response length")):
    _, vals = series(rows, key)
    if vals:
      k = max(1, len(vals) // 10)
      lines.append(f"{label}: first {k} steps {sum(vals[:k]) / k:.3f}, last {k} steps {sum(vals[-k:]) / k:.3f}")
  lines.append(f"reference resets at steps: {reset_steps(rows) or 'none'}")
  skipped = rows[-1].get("nonfinite_skips")
  if skipped is not None:
    lines.append(f"updates skipped for NaN/Inf: {skipped}")
  return "\n".join(lines)


def write_run_report(workdir: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> tuple[str, str]:
  """Writes `training_curves.png` and `summary.txt` of a run into `workdir`; returns (summary text, png path)."""
  png = plot_training_curves(rows, os.path.join(workdir, "training_curves.png"),
                             title=f"prorl_jax: {os.path.basename(os.fspath(workdir))}")
  text = summary_text(rows)
  with open(os.path.join(workdir, "summary.txt"), "w") as f:
    f.write(text + "\n")
  return text, png
