"""ProRL's claims as computations: each takes the study's measurements (training metrics per run, large-k
evaluations per checkpoint) and returns the numbers and a verdict computed from them, never written by hand.

A verdict compares a per-seed effect with `min_effect` (smaller changes are noise at this scale):
"supported" when every seed shows the effect, "not supported" when none does, "inconclusive" in between or when the
data to test it is missing (the evidence then says what is missing). Claims (P1 = ProRL, arXiv 2505.24864;
ALGORITHMS.md §2-3, §13-14):

  a. boundary: pass@k at large k rises with steps on hard levels (the reasoning boundary expands) while on easy
     levels it does not rise as much (it sharpens: P1 §4.1, Fig. 4).
  b. resets: with reference resets the validation score keeps rising over the second half of the run, more than
     without them, once the KL term has grown (P1 §2.2, §3.3).
  c. decoupled clipping (clip_high > clip_low) keeps entropy higher than symmetric clipping (DAPO; P1 §2.1).
  d. dynamic sampling reaches a given score@1 with fewer generated samples (DAPO §3.2; P1 §2.1).
  e. improvement continues with more steps: the last evaluated checkpoint beats the one before it (P1 §4.2).

Pure functions of plain data (`series` and `reset_steps` read metric rows as the trainer's own report does): `rows` maps "<variant>/seed<N>" to metric rows ({"step": s, key: value}),
`evals` maps "base" and "<variant>/seed<N>/step<S>" to {benchmark: summary} (`evaluation.summarize`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from prorl_jax.training.metrics_log import reset_steps, series

Rows = Sequence[Mapping[str, Any]]
VALIDATION_KEY = "eval/score@1"
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"

STATEMENTS = {
    "a": "pass@k at large k on hard levels rises with RL steps (the reasoning boundary expands), more than on easy "
         "levels (where RL sharpens)",
    "b": "reference resets sustain improvement after the KL term saturates: over the second half of the run the "
         "validation score rises more with resets than without",
    "c": "decoupled clipping (clip_high > clip_low) keeps policy entropy higher than symmetric clipping",
    "d": "dynamic sampling reaches a given validation score@1 with fewer generated samples",
    "e": "improvement continues with more steps: the last evaluated checkpoint scores higher than the one before it",
}


def window_mean(rows: Rows, key: str, lo: float, hi: float) -> float:
  """Mean of `key` over rows with lo < step <= hi (nan if none)."""
  vals = [v for s, v in zip(*series(rows, key)) if lo < s <= hi]
  return sum(vals) / len(vals) if vals else math.nan


def cumulative_at(rows: Rows, key: str, step: int) -> float:
  """Sum of `key` over rows with step <= `step`."""
  return float(sum(v for s, v in zip(*series(rows, key)) if s <= step))


def verdict(effects: Sequence[float], min_effect: float) -> tuple[str, int]:
  """(verdict, number of seeds whose effect exceeds `min_effect`); nan effects count as missing data."""
  known = [e for e in effects if not math.isnan(e)]
  if not known or len(known) < len(effects):
    return INCONCLUSIVE, sum(e > min_effect for e in known)
  wins = sum(e > min_effect for e in known)
  return (SUPPORTED if wins == len(known) else NOT_SUPPORTED if wins == 0 else INCONCLUSIVE), wins


def nanmean(values: Sequence[float]) -> float:
  """The mean of the values that are not NaN (NaN if none is)."""
  vals = [v for v in values if not math.isnan(v)]
  return sum(vals) / len(vals) if vals else math.nan


def nan_sd(values: Sequence[float], *, single: float = math.nan) -> float:
  """The sample standard deviation of the values that are not NaN; `single` for one value, NaN for none."""
  vals = [v for v in values if not math.isnan(v)]
  if len(vals) < 2:
    return single if vals else math.nan
  m = sum(vals) / len(vals)
  return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def group_metric(summary: Mapping[str, Mapping[str, float]] | None, benchmarks: Sequence[str], key: str) -> float:
  """Mean of `key` over the benchmarks present in `summary` (nan if none is)."""
  if not summary:
    return math.nan
  vals = [float(summary[b][key]) for b in benchmarks if summary.get(b) and key in summary[b]]
  return sum(vals) / len(vals) if vals else math.nan


def _claim(cid: str, verdict_: str, summary: str, evidence: dict[str, Any]) -> dict[str, Any]:
  return {"id": cid, "statement": STATEMENTS[cid], "verdict": verdict_, "summary": summary,
          "evidence": _finite(evidence)}


def _finite(x: Any) -> Any:
  """JSON-safe: nan and inf become None."""
  if isinstance(x, float):
    return x if math.isfinite(x) else None
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  return x


def _seeds_of(rows: Mapping[str, Rows], variant: str) -> list[int]:
  return sorted(int(name.rsplit("seed", 1)[1]) for name in rows if name.rsplit("/", 1)[0] == variant)


def _fmt(x: float) -> str:
  return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def claim_boundary(evals: Mapping[str, Any], seeds: Sequence[int], *, variant: str, steps: Sequence[int],
                   easy: Sequence[str], hard: Sequence[str], k: int, min_effect: float) -> dict[str, Any]:
  """(a) pass@k (k = the evaluation's samples) at each evaluated step vs the base, on hard and on easy levels."""
  key = f"pass@{k}"
  base = evals.get("base")
  steps = [s for s in steps if s]
  per_seed, d_hard, d_gap = {}, [], []
  for seed in seeds:
    curve = {s: (group_metric(evals.get(f"{variant}/seed{seed}/step{s}"), hard, key),
                 group_metric(evals.get(f"{variant}/seed{seed}/step{s}"), easy, key)) for s in steps}
    hard_end, easy_end = curve[steps[-1]] if steps else (math.nan, math.nan)
    dh = hard_end - group_metric(base, hard, key)
    de = easy_end - group_metric(base, easy, key)
    d_hard.append(dh)
    d_gap.append(dh - de)
    per_seed[str(seed)] = {"hard_by_step": {str(s): c[0] for s, c in curve.items()},
                           "easy_by_step": {str(s): c[1] for s, c in curve.items()}, "hard_change": dh,
                           "easy_change": de}
  v_hard, wins = verdict(d_hard, min_effect)
  v_gap, gap_wins = verdict(d_gap, 0.0)
  v = SUPPORTED if v_hard == SUPPORTED and v_gap == SUPPORTED else (
      NOT_SUPPORTED if v_hard == NOT_SUPPORTED else INCONCLUSIVE)
  base_hard, base_easy = group_metric(base, hard, key), group_metric(base, easy, key)
  end_hard = nanmean([base_hard + d for d in d_hard])
  end_easy = nanmean([base_easy + per_seed[str(s)]["easy_change"] for s in seeds])
  summary = (f"{key} on hard levels ({', '.join(hard)}) went from {_fmt(base_hard)} (base) to {_fmt(end_hard)} "
             f"(step {steps[-1] if steps else '?'}, mean of {len(seeds)} seeds), rising by more than {min_effect} "
             f"in {wins}/{len(seeds)} seeds; on easy levels from {_fmt(base_easy)} to {_fmt(end_easy)}; the hard "
             f"change exceeded the easy one in {gap_wins}/{len(seeds)} seeds")
  return _claim("a", v, summary, {"metric": key, "variant": variant, "hard": list(hard), "easy": list(easy),
                                  "base_hard": base_hard, "base_easy": base_easy, "final_hard_mean": end_hard,
                                  "final_easy_mean": end_easy, "final_hard_spread": nan_sd(
                                      [base_hard + d for d in d_hard], single=0.0),
                                  "seeds_hard_rose": wins, "seeds_hard_rose_more_than_easy": gap_wins,
                                  "per_seed": per_seed, "min_effect": min_effect})


def claim_resets(rows: Mapping[str, Rows], seeds: Sequence[int], *, full: str, no_reset: str, total_steps: int,
                 min_effect: float) -> dict[str, Any]:
  """(b) validation score@1 gain over the second half (mean of the last quarter's validations minus the second
  quarter's), with resets minus without, paired by seed; KL over the second half shows saturation."""
  q = total_steps / 4
  effects, per_seed, reset_at = [], {}, []
  for seed in seeds:
    a, b = rows.get(f"{full}/seed{seed}", []), rows.get(f"{no_reset}/seed{seed}", [])
    gain_a = window_mean(a, VALIDATION_KEY, 3 * q, 4 * q) - window_mean(a, VALIDATION_KEY, q, 2 * q)
    gain_b = window_mean(b, VALIDATION_KEY, 3 * q, 4 * q) - window_mean(b, VALIDATION_KEY, q, 2 * q)
    resets = [s for s in reset_steps(a) if s > 2 * q]
    reset_at.append(resets)
    effects.append(gain_a - gain_b if resets else math.nan)
    per_seed[str(seed)] = {"gain_with_resets": gain_a, "gain_without": gain_b, "resets_in_second_half": resets,
                           "kl_second_half_with_resets": window_mean(a, "kl", 2 * q, 4 * q),
                           "kl_second_half_without": window_mean(b, "kl", 2 * q, 4 * q),
                           "kl_first_half_without": window_mean(b, "kl", 0, 2 * q)}
  v, wins = verdict(effects, min_effect)
  missing = "" if all(reset_at) else " (no reset fell in the second half of some run: untested there)"
  with_, without = (nanmean([p[key] for p in per_seed.values()]) for key in ("gain_with_resets", "gain_without"))
  summary = (f"second-half gain in validation score@1: {_fmt(with_)} with resets vs {_fmt(without)} without (mean of "
             f"{len(seeds)} seeds); with resets ahead by more than {min_effect} in {wins}/{len(seeds)} seeds{missing}")
  return _claim("b", v, summary, {"variants": [full, no_reset], "quarter_steps": q, "per_seed": per_seed,
                                  "seeds_ahead": wins, "min_effect": min_effect})


def claim_entropy(rows: Mapping[str, Rows], seeds: Sequence[int], *, full: str, symmetric: str, total_steps: int,
                  min_effect: float) -> dict[str, Any]:
  """(c) mean entropy over the second half, decoupled vs symmetric clipping, as a relative difference."""
  effects, per_seed = [], {}
  for seed in seeds:
    a = window_mean(rows.get(f"{full}/seed{seed}", []), "entropy", total_steps / 2, total_steps)
    b = window_mean(rows.get(f"{symmetric}/seed{seed}", []), "entropy", total_steps / 2, total_steps)
    effects.append((a - b) / abs(b) if b else math.nan)
    per_seed[str(seed)] = {"entropy_decoupled": a, "entropy_symmetric": b, "relative_difference": effects[-1]}
  v, wins = verdict(effects, min_effect)
  summary = (f"mean entropy over the second half: {_fmt(nanmean([p['entropy_decoupled'] for p in per_seed.values()]))}"
             f" with decoupled clipping vs {_fmt(nanmean([p['entropy_symmetric'] for p in per_seed.values()]))} "
             f"symmetric; higher by more than {min_effect:.0%} in {wins}/{len(seeds)} seeds")
  return _claim("c", v, summary, {"variants": [full, symmetric], "per_seed": per_seed, "seeds_higher": wins,
                                  "min_relative_effect": min_effect})


def samples_to_reach(rows: Rows, target: float) -> tuple[float, float]:
  """(generated samples, step) when validation score@1 first reached `target` (inf, inf if never)."""
  for s, v in zip(*series(rows, VALIDATION_KEY)):
    if s > 0 and v >= target:  # the start's own validation does not count as reaching it
      return cumulative_at(rows, "rollout/samples", s), float(s)
  return math.inf, math.inf


def claim_dynamic_sampling(rows: Mapping[str, Rows], seeds: Sequence[int], *, full: str, no_ds: str,
                           target_fraction: float, min_effect: float) -> dict[str, Any]:
  """(d) generated samples until validation score@1 first reaches a target: the start score plus
  `target_fraction` of the way to the lower of the two variants' best scores (mean over seeds), among the variants
  whose best rose more than `min_effect` above the start (untested, inconclusive, when neither did)."""
  runs = [rows.get(f"{v}/seed{s}", []) for v in (full, no_ds) for s in seeds]
  start = nanmean([series(r, VALIDATION_KEY)[1][0] for r in runs if series(r, VALIDATION_KEY)[1]])
  best = [nanmean([max(series(rows.get(f"{v}/seed{s}", []), VALIDATION_KEY)[1] or [math.nan]) for s in seeds])
          for v in (full, no_ds)]
  improved = [b for b in best if b > start + min_effect]
  if not improved:
    return _claim("d", INCONCLUSIVE, f"untested: neither variant's best validation score@1 ({_fmt(best[0])}, "
                  f"{_fmt(best[1])}; mean over seeds) rose more than {min_effect} above the start ({_fmt(start)})",
                  {"variants": [full, no_ds], "start": start, "best_mean": dict(zip((full, no_ds), best))})
  # The lower of the improved variants' best scores: both could reach it; one that never improved cannot.
  target = start + target_fraction * (min(improved) - start)
  effects, per_seed = [], {}
  for seed in seeds:
    sa, ta = samples_to_reach(rows.get(f"{full}/seed{seed}", []), target)
    sb, tb = samples_to_reach(rows.get(f"{no_ds}/seed{seed}", []), target)
    if math.isinf(sa) and math.isinf(sb):
      effect = math.nan
    else:
      effect = 1.0 - sa / sb if not math.isinf(sb) else 1.0  # sa, sb > 0: step 0 does not count
    effects.append(effect)
    per_seed[str(seed)] = {"samples_with": sa, "steps_with": ta, "samples_without": sb, "steps_without": tb,
                           "relative_saving": effect}
  v, wins = verdict(effects, min_effect)
  summary = (f"target validation score@1 {_fmt(target)} (start {_fmt(start)}, {target_fraction:.0%} of the way to "
             f"{_fmt(min(best))}): reached with "
             + ", ".join(f"{p['samples_with']:.0f} vs {p['samples_without']:.0f}" for p in per_seed.values())
             + f" samples (with vs without dynamic sampling, per seed); fewer by more than {min_effect:.0%} in "
             f"{wins}/{len(seeds)} seeds")
  return _claim("d", v, summary, {"variants": [full, no_ds], "target": target, "start": start,
                                  "best_mean": dict(zip((full, no_ds), best)), "per_seed": per_seed,
                                  "seeds_fewer": wins, "min_relative_effect": min_effect})


def claim_continued(evals: Mapping[str, Any], rows: Mapping[str, Rows], seeds: Sequence[int], *, variant: str,
                    steps: Sequence[int], total_steps: int, k: int, min_effect: float) -> dict[str, Any]:
  """(e) score@1 of the last evaluated checkpoint minus the one before it (all benchmarks, k samples each); with
  fewer than two evaluated steps, the validation score's last quarter minus the quarter before."""
  steps = sorted(s for s in steps if s)
  effects, per_seed = [], {}
  for seed in seeds:
    if len(steps) >= 2:
      before = group_metric(evals.get(f"{variant}/seed{seed}/step{steps[-2]}"), ["all"], "score@1")
      after = group_metric(evals.get(f"{variant}/seed{seed}/step{steps[-1]}"), ["all"], "score@1")
      source = f"score@1 over {k} samples at steps {steps[-2]} and {steps[-1]}"
    else:
      r, q = rows.get(f"{variant}/seed{seed}", []), total_steps / 4
      before, after = window_mean(r, VALIDATION_KEY, 2 * q, 3 * q), window_mean(r, VALIDATION_KEY, 3 * q, 4 * q)
      source = "validation score@1, third vs last quarter of the run"
    effects.append(after - before)
    per_seed[str(seed)] = {"before": before, "after": after}
  v, wins = verdict(effects, min_effect)
  summary = (f"{source}: {_fmt(nanmean([p['before'] for p in per_seed.values()]))} -> "
             f"{_fmt(nanmean([p['after'] for p in per_seed.values()]))} (mean of {len(seeds)} seeds); rose by more "
             f"than {min_effect} in {wins}/{len(seeds)} seeds")
  return _claim("e", v, summary, {"variant": variant, "measure": source, "per_seed": per_seed, "seeds_rose": wins,
                                  "min_effect": min_effect})


def evaluate_claims(rows: Mapping[str, Rows], evals: Mapping[str, Any], *, claims: Mapping[str, Any],
                    seeds: Sequence[int], eval_steps: Sequence[int], total_steps: int, k: int) -> list[dict]:
  """Every claim whose variants are in the study; a claim whose variants did not run is inconclusive and says so."""
  ran = {name.rsplit("/", 1)[0] for name in rows}
  easy = [b for b in str(claims["easy"]).split(",") if b]
  hard = [b for b in str(claims["hard"]).split(",") if b]
  m = float(claims["min_effect"])
  full = claims["full"]

  def needs(cid: str, *variants: str):
    missing = [v for v in variants if v not in ran]
    return None if not missing else _claim(cid, INCONCLUSIVE, f"not measured: variant(s) {missing} did not run",
                                           {"missing_variants": missing})

  out = [needs("a", full) or claim_boundary(evals, seeds, variant=full, steps=eval_steps, easy=easy, hard=hard,
                                            k=k, min_effect=m),
         needs("b", full, claims["no_reset"]) or claim_resets(rows, seeds, full=full, no_reset=claims["no_reset"],
                                                              total_steps=total_steps, min_effect=m),
         needs("c", full, claims["symmetric_clip"]) or claim_entropy(
             rows, seeds, full=full, symmetric=claims["symmetric_clip"], total_steps=total_steps, min_effect=m),
         needs("d", full, claims["no_dynamic_sampling"]) or claim_dynamic_sampling(
             rows, seeds, full=full, no_ds=claims["no_dynamic_sampling"],
             target_fraction=float(claims["target_fraction"]), min_effect=m),
         needs("e", full) or claim_continued(evals, rows, seeds, variant=full, steps=eval_steps,
                                             total_steps=total_steps, k=k, min_effect=m)]
  return out
