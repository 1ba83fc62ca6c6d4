"""pass@k curves: ProRL's picture of an expanded reasoning boundary (P1 §4, Figs. 4-6).

x is k on a log2 axis, y is unbiased pass@k (Chen et al. 2021); one line per benchmark. With several checkpoints
(e.g. "baseline" and "trained") every benchmark keeps its colour and each checkpoint gets its own line style, so
a curve of the trained model lying above the baseline's at large k shows problems it solves that the baseline
never does.

Every point, k = 1 included, is the pass@k of fully correct samples; the mean score with partial credit
(`score@1`, ProRL's headline "pass@1") is not on these axes.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from prorl_jax.evaluation.runner import ProblemResult
from prorl_jax.evaluation.summary import summarize

LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")

Summary = Mapping[str, float]
Curves = Mapping[str, Mapping[str, Summary] | Sequence[ProblemResult]]


def curve_points(summary: Summary) -> tuple[list[int], list[float]]:
  """(ks, pass@k values) of one benchmark's summary, ks ascending."""
  ks = sorted(int(key.split("@", 1)[1]) for key in summary if key.startswith("pass@"))
  values = [float(summary[f"pass@{k}"]) for k in ks]
  return ks, values


def _as_summaries(curves: Curves) -> dict[str, dict[str, Summary]]:
  if not isinstance(curves, Mapping) or not curves:
    raise ValueError("curves must be a non-empty dict {checkpoint label: {benchmark: summary}}")
  out = {}
  for label, value in curves.items():
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
      value = summarize(list(value))  # ProblemResults of that checkpoint
    if not isinstance(value, Mapping):
      raise ValueError(f"curves[{label!r}] must map benchmark -> summary (from summarize()), got "
                       f"{type(value).__name__}")
    out[str(label)] = dict(value)
  return out


def pass_at_k_figure(curves: Curves, *, benchmarks: Sequence[str] | None = None, title: str | None = None,
                     include_all: bool = False) -> Any:
  """A matplotlib Figure of pass@k vs k (log2 x axis) for every benchmark and checkpoint.

  Args:
    curves: {checkpoint label: {benchmark: summary}} with summaries from `summarize` (or the checkpoint's
      `ProblemResult`s, summarized here). Up to four checkpoints.
    benchmarks: which benchmarks to draw, in legend order (default: all, sorted, without "all").
    title: the axes title.
    include_all: also draw the "all" pseudo-benchmark.

  Raises:
    ValueError: no curves, more checkpoints than line styles, a requested benchmark missing from every
      checkpoint, or a summary without pass@k entries.
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top  (lazy: ~0.5 s import)
  from matplotlib.lines import Line2D  # pylint: disable=g-import-not-at-top

  summaries = _as_summaries(curves)
  if len(summaries) > len(LINE_STYLES):
    raise ValueError(f"at most {len(LINE_STYLES)} checkpoints fit on one plot, got {len(summaries)}")
  present = sorted({b for s in summaries.values() for b in s if s[b] and (include_all or b != "all")})
  names = list(benchmarks) if benchmarks is not None else present
  missing = [b for b in names if b not in present]
  if missing or not names:
    raise ValueError(f"benchmarks {missing or names} have no summary in any checkpoint; present: {present}")
  fig = Figure(figsize=(7.5, 4.8), dpi=120)
  ax = fig.add_subplot(1, 1, 1)
  colours = [f"C{i % 10}" for i in range(len(names))]
  max_k = 1
  for (label, per_bench), style, marker in zip(summaries.items(), LINE_STYLES, MARKERS):
    for name, colour in zip(names, colours):
      if not per_bench.get(name):
        continue
      ks, values = curve_points(per_bench[name])
      if not ks:
        raise ValueError(f"curves[{label!r}][{name!r}] has no pass@k entries: {sorted(per_bench[name])}")
      max_k = max(max_k, ks[-1])
      ax.plot(ks, values, color=colour, linestyle=style, marker=marker, markersize=3.5, linewidth=1.6,
              label=f"{name} ({label})")
  ax.set_xscale("log", base=2)
  ticks = [1 << i for i in range(max_k.bit_length()) if (1 << i) <= max_k]
  ax.set_xticks(ticks, [str(t) for t in ticks])
  ax.set_xlim(0.9, max_k * 1.1)
  ax.set_ylim(-0.02, 1.02)
  ax.set_xlabel("k (samples per problem)")
  ax.set_ylabel("pass@k")
  ax.grid(True, which="major", alpha=0.3)
  if title:
    ax.set_title(title)
  bench_handles = [Line2D([], [], color=c, linewidth=2, label=n) for n, c in zip(names, colours)]
  legend = ax.legend(handles=bench_handles, title="benchmark", loc="lower right", fontsize=8, title_fontsize=8)
  if len(summaries) > 1:
    ax.add_artist(legend)
    style_handles = [Line2D([], [], color="0.3", linestyle=s, marker=m, label=lbl)
                     for lbl, s, m in zip(summaries, LINE_STYLES, MARKERS)]
    ax.legend(handles=style_handles, title="checkpoint", loc="upper left", fontsize=8, title_fontsize=8)
  fig.tight_layout()
  return fig


def plot_pass_at_k(curves: Curves, path: str | os.PathLike, **kwargs: Any) -> pathlib.Path:
  """Draws `pass_at_k_figure(curves, **kwargs)` and writes it to `path` (PNG, or any format matplotlib knows by
  suffix). Returns the path."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  pass_at_k_figure(curves, **kwargs).savefig(path)
  return path
