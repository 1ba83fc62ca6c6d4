"""What a study writes: `claims.json` (the public format), `report.md` (tables and verdicts, every number from the
measurements) and the PNGs: pass@k curves per variant and difficulty, scores against steps, training dynamics with
reset markers."""

from __future__ import annotations

import math
import pathlib
from typing import Any, Mapping, Sequence

from prorl_jax.study import claims as claims_lib

Rows = Sequence[Mapping[str, Any]]


def _mean_curve(runs: Sequence[Rows], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
  """(steps, mean, min, max) of `key` over the runs, at the steps every run logged it."""
  per_run = [dict(zip(*claims_lib.series(r, key))) for r in runs]
  per_run = [p for p in per_run if p]
  if not per_run:
    return [], [], [], []
  steps = sorted(set.intersection(*(set(p) for p in per_run)))
  vals = [[p[s] for p in per_run] for s in steps]
  return steps, [sum(v) / len(v) for v in vals], [min(v) for v in vals], [max(v) for v in vals]


def _by_variant(rows: Mapping[str, Rows]) -> dict[str, list[Rows]]:
  out: dict[str, list[Rows]] = {}
  for name, r in rows.items():
    out.setdefault(name.rsplit("/", 1)[0], []).append(r)
  return out


def _figure(nrows: int, ncols: int, size: tuple[float, float]):
  from matplotlib.figure import Figure  # lazy: ~0.5 s import
  fig = Figure(figsize=size, dpi=110)
  axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(nrows * ncols)]
  return fig, axes


def plot_pass_at_k(evals: Mapping[str, Any], variant: str, seeds: Sequence[int], steps: Sequence[int],
                   path: pathlib.Path) -> pathlib.Path | None:
  """pass@k against k (log2 axis), one panel per benchmark, one line per evaluated step (mean over seeds; step 0 is
  the base model)."""
  labels = {0: "base"} | {s: f"step {s}" for s in steps if s}
  curves: dict[int, dict[str, dict[str, float]]] = {}
  for s in sorted(labels):
    summaries = [evals.get("base")] if s == 0 else [evals.get(f"{variant}/seed{seed}/step{s}") for seed in seeds]
    summaries = [x for x in summaries if x]
    if summaries:
      benches = set.intersection(*(set(x) for x in summaries))
      curves[s] = {b: {k: sum(x[b][k] for x in summaries) / len(summaries) for k in summaries[0][b]
                       if k.startswith("pass@")} for b in benches}
  benches = sorted({b for c in curves.values() for b in c if b != "all"}, key=_level_order)
  if not benches or len(curves) < 1:
    return None
  ncols = min(4, len(benches))
  nrows = math.ceil(len(benches) / ncols)
  fig, axes = _figure(nrows, ncols, (3.4 * ncols, 2.8 * nrows))
  for ax, bench in zip(axes, benches):
    for i, (s, per_bench) in enumerate(sorted(curves.items())):
      if bench not in per_bench:
        continue
      ks = sorted(int(k.split("@")[1]) for k in per_bench[bench])
      ax.plot(ks, [per_bench[bench][f"pass@{k}"] for k in ks], marker="o", markersize=2.5, linewidth=1.4,
              color=f"C{i}", linestyle="--" if s == 0 else "-", label=labels[s])
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(bench, fontsize=9)
    ax.set_xlabel("k", fontsize=8)
    ax.grid(alpha=0.3)
  for ax in axes[len(benches):]:
    ax.set_visible(False)
  axes[0].set_ylabel("pass@k (fully correct)")
  axes[0].legend(fontsize=7)
  fig.suptitle(f"{variant}: pass@k by difficulty (mean of {len(seeds)} seed(s))")
  fig.tight_layout()
  fig.savefig(path)
  return path


def _level_order(name: str) -> tuple:
  digits = "".join(ch for ch in name.rsplit("L", 1)[-1] if ch.isdigit())
  return (name.rsplit("/", 1)[0], int(digits) if digits else 0, name)


def plot_scores(rows: Mapping[str, Rows], evals: Mapping[str, Any], seeds: Sequence[int], steps: Sequence[int],
                hard: Sequence[str], easy: Sequence[str], k: int, path: pathlib.Path) -> pathlib.Path:
  """Validation score@1 and pass@1 against steps per variant (mean, band = min..max over seeds), and the large-k
  evaluation's pass@k on hard and easy levels at the evaluated steps."""
  fig, axes = _figure(1, 3, (16, 4.2))
  for i, (variant, runs) in enumerate(sorted(_by_variant(rows).items())):
    for ax, key in zip(axes[:2], ("eval/score@1", "eval/pass@1")):
      xs, mean, lo, hi = _mean_curve(runs, key)
      if xs:
        ax.plot(xs, mean, color=f"C{i}", marker="o", markersize=2.5, linewidth=1.3, label=variant)
        ax.fill_between(xs, lo, hi, color=f"C{i}", alpha=0.15, linewidth=0)
    xs, hard_y, easy_y = [], [], []
    for s in sorted({0, *steps}):
      keys = ["base"] if s == 0 else [f"{variant}/seed{seed}/step{s}" for seed in seeds]
      h = claims_lib.nanmean([claims_lib.group_metric(evals.get(key), hard, f"pass@{k}") for key in keys])
      e = claims_lib.nanmean([claims_lib.group_metric(evals.get(key), easy, f"pass@{k}") for key in keys])
      if not (math.isnan(h) and math.isnan(e)) and (s == 0 or any(evals.get(key) for key in keys)):
        xs.append(s)
        hard_y.append(h)
        easy_y.append(e)
    if len(xs) > 1:
      axes[2].plot(xs, hard_y, color=f"C{i}", marker="o", linewidth=1.3, label=f"{variant} hard")
      axes[2].plot(xs, easy_y, color=f"C{i}", marker="s", linestyle=":", linewidth=1.3, label=f"{variant} easy")
  for ax, title in zip(axes, ("validation score@1 (mean score)", "validation pass@1 (fully correct)",
                              f"pass@{k}: hard (solid) and easy (dotted) levels")):
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if ax.has_data():
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  return path


DYNAMICS = (("entropy", "entropy"), ("kl", "KL to reference"), ("response_length/mean", "response length"),
            ("pg_clipfrac", "clip fraction"))


def plot_dynamics(rows: Mapping[str, Rows], path: pathlib.Path) -> pathlib.Path:
  """Entropy, KL, response length and clip fraction against steps per variant (mean over seeds), with each
  variant's reference resets (of its first seed) as dashed lines in its colour."""
  fig, axes = _figure(1, len(DYNAMICS), (4.2 * len(DYNAMICS), 3.8))
  for i, (variant, runs) in enumerate(sorted(_by_variant(rows).items())):
    resets = claims_lib.reset_steps(runs[0])
    for ax, (key, _) in zip(axes, DYNAMICS):
      xs, mean, _, _ = _mean_curve(runs, key)
      if xs:
        ax.plot(xs, mean, color=f"C{i}", linewidth=1.1, label=variant)
      for s in resets:
        ax.axvline(s, color=f"C{i}", linestyle="--", linewidth=0.7, alpha=0.7)
  for ax, (_, title) in zip(axes, DYNAMICS):
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  if axes[0].has_data():
    axes[0].legend(fontsize=7)
  fig.suptitle("training dynamics (dashed: reference resets)")
  fig.tight_layout()
  fig.savefig(path)
  return path


def claims_json(claims: Sequence[Mapping[str, Any]], variants: Sequence[str], seeds: Sequence[int],
                wall_seconds: float, **extra: Any) -> dict[str, Any]:
  return {"claims": [dict(c) for c in claims], "variants": list(variants), "seeds": list(seeds),
          "wall_seconds": float(wall_seconds), **extra}


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  def cell(x):
    if isinstance(x, float):
      return "n/a" if math.isnan(x) else f"{x:.3f}"
    return str(x).replace("|", "\\|")
  return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
          + ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows])


def markdown(*, title: str, command: str, claims: Sequence[Mapping[str, Any]], evals: Mapping[str, Any],
             runs: Sequence[Mapping[str, Any]], variants: Mapping[str, Sequence[str]], seeds: Sequence[int],
             steps: Sequence[int], k: int, wall_seconds: float, pngs: Sequence[pathlib.Path],
             notes: Sequence[str] = (), evaluated: Sequence[str] | None = None) -> str:
  """The report: claims and verdicts, the large-k evaluation per level, the runs and their wall times."""
  out = [f"# {title}", "", f"Command: `{command}`", "",
         f"Wall time: {wall_seconds / 60:.1f} min for {len(runs)} runs ({', '.join(variants)} × seeds "
         f"{', '.join(map(str, seeds))}) and the evaluation of steps {', '.join(map(str, steps))} with {k} samples "
         "per problem.", "", "Every verdict below is computed from the numbers (prorl_jax/study/claims.py); "
         "`score@1` is the mean score (ProRL's headline \"pass@1\"), `pass@k` the share of problems with a fully "
         "correct sample among k.", "", "## Claims", ""]
  out += _table(["claim", "statement", "verdict", "measured"],
                [[c["id"], c["statement"], f"**{c['verdict']}**", c.get("summary", "")] for c in claims])
  out += [""] + list(notes) + ([""] if notes else [])
  out += ["## Large-k evaluation", "", f"pass@{k} per benchmark (mean over seeds; in brackets min..max):", ""]
  labels = ["base"] + [f"{v} step {s}" for v in (variants if evaluated is None else evaluated) for s in steps if s]
  benches = sorted({b for e in evals.values() for b in e if b != "all"}, key=_level_order) + ["all"]
  rows = []
  for b in benches:
    row = [b]
    for label in labels:
      if label == "base":
        vals = [evals.get("base", {}).get(b, {}).get(f"pass@{k}", math.nan)]
      else:
        v, s = label.rsplit(" step ", 1)
        vals = [evals.get(f"{v}/seed{seed}/step{s}", {}).get(b, {}).get(f"pass@{k}", math.nan) for seed in seeds]
      vals = [x for x in vals if not math.isnan(x)]
      row.append("" if not vals else f"{sum(vals) / len(vals):.3f}" + (
          f" [{min(vals):.2f}..{max(vals):.2f}]" if len(vals) > 1 else ""))
    rows.append(row)
  if any(any(r[1:]) for r in rows):
    out += _table(["benchmark"] + labels, rows)
  else:
    out.append("(no checkpoint was evaluated)")
  out += ["", "## Runs", ""]
  out += _table(["run", "overrides", "wall time (min)", "final validation score@1", "exit"],
                [[r["name"], " ".join(f"`{x}`" for x in r["overrides"]) or "(base)", f"{r['seconds'] / 60:.1f}",
                  r["final_score"],
                  r["returncode"]] for r in runs])
  out += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs]
  out += ["", "## Per claim, per seed", ""]
  for c in claims:
    out += [f"### ({c['id']}) {c['verdict']}", "", c["statement"] + ".", ""]
    out += claim_table(c["evidence"]) or ["(no per-seed numbers: " + c.get("summary", "") + ")"]
    scalars = {k: v for k, v in c["evidence"].items() if isinstance(v, (int, float, str)) and k != "per_seed"}
    if scalars:
      out += ["", "; ".join(f"{k} = {_cell(v)}" for k, v in scalars.items())]
    out.append("")
  return "\n".join(out) + "\n"


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def _cell(x: Any) -> str:
  if x is None:
    return "n/a"
  if isinstance(x, float):
    return "n/a" if math.isnan(x) else ("inf" if math.isinf(x) else f"{x:.4g}")
  if isinstance(x, (list, tuple)):
    return ", ".join(_cell(v) for v in x) or "none"
  return str(x)


def claim_table(evidence: Mapping[str, Any]) -> list[str]:
  """A markdown table of a claim's per-seed numbers (one row per seed, then mean and sample standard deviation)."""
  per_seed = evidence.get("per_seed") or {}
  if not per_seed:
    return []
  rows = {seed: _flatten(v) for seed, v in per_seed.items()}
  columns = list(dict.fromkeys(k for r in rows.values() for k in r))
  lines = _table(["seed"] + columns, [[seed] + [_cell(r.get(col)) for col in columns] for seed, r in rows.items()])
  if len(rows) > 1:
    for label, fn in (("mean", claims_lib.nanmean), ("sd", claims_lib.nan_sd)):
      vals = []
      for col in columns:
        xs = [r.get(col) for r in rows.values()]
        nums = [float(x) for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool) and x is not None
                and math.isfinite(x)]
        vals.append(_cell(fn(nums)) if len(nums) == len(xs) and nums else "")
      lines.append("| " + " | ".join([label] + vals) + " |")
  return lines
