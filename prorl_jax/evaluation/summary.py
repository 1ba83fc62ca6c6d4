"""From per-problem scores to the numbers ProRL reports, under two names that are not the same quantity:

- `score@1`: the mean verifier score over all samples. This is what ProRL's headline tables call pass@1 (P1 §3.4:
  the mean over 16 samples of a binary reward for math, code and STEM, of the continuous score for logic and
  instruction following); it gives partial credit.
- `pass@k` (k = 1, 2, 4, ... up to the number of samples): the unbiased probability that at least one of k
  samples is fully correct (score >= SOLVED_THRESHOLD; Chen et al. 2021, arXiv 2107.03374), ProRL's pass@k curves.

With binary rewards score@1 equals pass@1; with partial credit score@1 >= pass@1 and may even exceed pass@2.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from prorl_jax.algorithms import pass_at_k
from prorl_jax.evaluation.runner import ProblemResult
from prorl_jax.rewards import SOLVED_THRESHOLD


def ks_up_to(n: int) -> list[int]:
  """1, 2, 4, ... up to n, and n itself if it is not a power of two."""
  ks = [1 << i for i in range(n.bit_length()) if (1 << i) <= n]
  return ks + ([n] if ks[-1] != n else [])


def summarize_group(results: Sequence[ProblemResult]) -> dict[str, float]:
  """score@1 (mean score), pass@k (fully correct, k = 1 included) for the largest common sample count, mean
  response length, truncation rate."""
  if not results:
    return {}
  n = min(len(r.scores) for r in results)
  scores = np.array([r.scores[:n] for r in results], np.float64)
  out = {"num_problems": len(results), "num_samples": n}
  correct = (scores >= SOLVED_THRESHOLD).sum(axis=1)
  out["score@1"] = float(scores.mean())
  for k in ks_up_to(n):
    out[f"pass@{k}"] = float(np.mean([pass_at_k(n, int(c), k) for c in correct]))
  out["mean_length"] = float(np.mean([np.mean(r.lengths[:n]) for r in results]))
  out["truncated_frac"] = float(np.mean([1.0 - np.mean(r.finished_by_eos[:n]) for r in results]))
  return out


def summarize(results: Sequence[ProblemResult], by: str = "benchmark") -> dict[str, dict[str, float]]:
  """Summaries per benchmark (or per domain with `by="domain"`), plus "all" over every problem."""
  groups: dict[str, list[ProblemResult]] = defaultdict(list)
  for r in results:
    groups[getattr(r, by)].append(r)
  out = {name: summarize_group(rs) for name, rs in sorted(groups.items())}
  out["all"] = summarize_group(results)
  return out


def format_table(summary: dict[str, dict[str, float]]) -> str:
  """A plain-text table: one row per benchmark, score@1 then the pass@k columns."""
  names = [n for n in summary if summary[n]]
  if not names:
    return "(no results)"
  ks = sorted({int(k.split("@")[1]) for n in names for k in summary[n] if k.startswith("pass@")})
  header = ["benchmark", "problems", "samples", "score@1"] + [f"pass@{k}" for k in ks] + ["mean_len", "truncated"]
  rows = [header]
  for n in names:
    s = summary[n]
    rows.append([n, str(s["num_problems"]), str(s["num_samples"]), f"{s['score@1']:.4f}"]
                + [f"{s[f'pass@{k}']:.4f}" if f"pass@{k}" in s else "" for k in ks]
                + [f"{s['mean_length']:.1f}", f"{s['truncated_frac']:.3f}"])
  widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
