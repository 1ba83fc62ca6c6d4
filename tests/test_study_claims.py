"""The claims' verdicts from synthetic measurements whose answer is known by construction (prorl_jax.study.claims),
and the report built from them."""

import json
import math

import numpy as np
import pytest

from prorl_jax.study import claims as C
from prorl_jax.study import report

SEEDS = (0, 1, 2)
CLAIMS = {"easy": "chain/L1,chain/L2", "hard": "chain/L5,chain/L6", "full": "prorlv2", "no_reset": "no_reset",
          "symmetric_clip": "symmetric_clip", "no_dynamic_sampling": "no_dynamic_sampling", "min_effect": 0.02,
          "target_fraction": 0.8}


def summary(per_bench: dict[str, float], k: int = 8) -> dict[str, dict[str, float]]:
  """A summarize()-shaped dict whose pass@k is given; pass@1 = pass@k / 4, score@1 = pass@1."""
  out = {b: {"score@1": v / 4, "pass@1": v / 4, f"pass@{k}": v, "num_samples": k} for b, v in per_bench.items()}
  out["all"] = {"score@1": float(np.mean([v / 4 for v in per_bench.values()])), "num_samples": k,
                f"pass@{k}": float(np.mean(list(per_bench.values())))}
  return out


def rows_of(values: dict[str, list[float]], steps: int = 40, every: int = 5) -> list[dict]:
  """Metric rows like the trainer's: validation keys ("eval/...") every `every` steps from step 0, the others from
  step 1; `values[key][step]` is the value."""
  rows = []
  for s in range(steps + 1):
    row = {"step": s}
    for key, vals in values.items():
      if (key.startswith("eval/") and s % every) or (not key.startswith("eval/") and s == 0):
        continue
      row[key] = vals[s]
    rows.append(row)
  return rows


def test_verdict_rules():
  assert C.verdict([0.1, 0.05, 0.03], 0.02) == ("supported", 3)
  assert C.verdict([0.1, 0.0, 0.03], 0.02) == ("inconclusive", 2)
  assert C.verdict([0.01, -0.2, 0.0], 0.02) == ("not supported", 0)
  assert C.verdict([0.1, math.nan], 0.02) == ("inconclusive", 1)  # missing data never supports
  assert C.verdict([], 0.02) == ("inconclusive", 0)


@pytest.mark.parametrize("hard_end,easy_end,expected", [
    (0.30, 0.70, "supported"),  # hard rose 0.2, easy fell
    (0.11, 0.70, "not supported"),  # hard rose only 0.01 < min_effect
    (0.25, 1.00, "inconclusive"),  # hard rose, but easy rose more: not expansion where the base is weak
])
def test_boundary_claim(hard_end, easy_end, expected):
  evals = {"base": summary({"chain/L1": 0.8, "chain/L2": 0.8, "chain/L5": 0.1, "chain/L6": 0.1})}
  for seed in SEEDS:
    evals[f"prorlv2/seed{seed}/step20"] = summary({"chain/L1": 0.8, "chain/L2": 0.8, "chain/L5": 0.15,
                                                   "chain/L6": 0.15})
    evals[f"prorlv2/seed{seed}/step40"] = summary({"chain/L1": easy_end, "chain/L2": easy_end,
                                                   "chain/L5": hard_end, "chain/L6": hard_end})
  c = C.claim_boundary(evals, SEEDS, variant="prorlv2", steps=[0, 20, 40], easy=["chain/L1", "chain/L2"],
                       hard=["chain/L5", "chain/L6"], k=8, min_effect=0.02)
  assert c["verdict"] == expected
  assert c["evidence"]["base_hard"] == pytest.approx(0.1)
  assert c["evidence"]["final_hard_mean"] == pytest.approx(hard_end)
  assert c["evidence"]["per_seed"]["1"]["hard_by_step"] == {"20": pytest.approx(0.15), "40": pytest.approx(hard_end)}
  assert "pass@8" in c["summary"] and f"{hard_end:.3f}" in c["summary"]


def test_boundary_claim_one_seed_missing_is_inconclusive():
  evals = {"base": summary({"chain/L5": 0.1}), "prorlv2/seed0/step40": summary({"chain/L5": 0.5})}
  c = C.claim_boundary(evals, (0, 1), variant="prorlv2", steps=[40], easy=[], hard=["chain/L5"], k=8,
                       min_effect=0.02)
  assert c["verdict"] == "inconclusive"
  json.dumps(C._finite(c))  # nan becomes null, the claim stays valid JSON


def _validation(start: float, mid: float, end: float, steps: int = 40) -> list[float]:
  """Piecewise linear start -> mid (at steps/2) -> end."""
  h = steps // 2
  return list(np.interp(np.arange(steps + 1), [0, h, steps], [start, mid, end]))


def test_reset_claim():
  rows = {}
  for seed in SEEDS:
    resets = [0] * 41
    for s in range(30, 41):
      resets[s] = 1  # a reset at step 30, in the second half
    rows[f"prorlv2/seed{seed}"] = rows_of({"eval/score@1": _validation(0.2, 0.4, 0.6), "ref_resets": resets,
                                          "kl": [0.01] * 41})
    rows[f"no_reset/seed{seed}"] = rows_of({"eval/score@1": _validation(0.2, 0.4, 0.42), "ref_resets": [0] * 41,
                                           "kl": [0.05] * 41})
  c = C.claim_resets(rows, SEEDS, full="prorlv2", no_reset="no_reset", total_steps=40, min_effect=0.02)
  assert c["verdict"] == "supported"
  ev = c["evidence"]["per_seed"]["0"]
  # validation every 5 steps: last quarter (30, 40] = steps 35, 40 -> 0.55, 0.60; second quarter (10, 20] = steps
  # 15, 20 -> 0.35, 0.40
  assert ev["gain_with_resets"] == pytest.approx(0.575 - 0.375)
  assert ev["gain_without"] == pytest.approx(np.mean([0.4 + 0.001 * 15, 0.42]) - 0.375)
  assert ev["resets_in_second_half"] == [30]
  assert ev["kl_second_half_without"] == pytest.approx(0.05)
  # Without a reset in the second half the claim is untested, not refuted.
  for seed in SEEDS:
    for row in rows[f"prorlv2/seed{seed}"]:
      row["ref_resets"] = 0
  c = C.claim_resets(rows, SEEDS, full="prorlv2", no_reset="no_reset", total_steps=40, min_effect=0.02)
  assert c["verdict"] == "inconclusive" and "untested" in c["summary"]


@pytest.mark.parametrize("sym,expected", [(0.30, "supported"), (0.40, "not supported")])
def test_entropy_claim(sym, expected):
  rows = {f"prorlv2/seed{s}": rows_of({"entropy": [0.9] * 21 + [0.4] * 20}) for s in SEEDS}
  rows.update({f"symmetric_clip/seed{s}": rows_of({"entropy": [0.9] * 21 + [sym] * 20}) for s in SEEDS})
  c = C.claim_entropy(rows, SEEDS, full="prorlv2", symmetric="symmetric_clip", total_steps=40, min_effect=0.02)
  assert c["verdict"] == expected
  assert c["evidence"]["per_seed"]["2"]["relative_difference"] == pytest.approx((0.4 - sym) / sym)


def test_dynamic_sampling_claim_counts_samples_not_steps():
  # With dynamic sampling: 3x the samples per step but twice as fast in steps -> more samples to the target.
  full = rows_of({"eval/score@1": _validation(0.2, 0.6, 0.6), "rollout/samples": [300] * 41})
  nods = rows_of({"eval/score@1": _validation(0.2, 0.4, 0.6), "rollout/samples": [100] * 41})
  rows = {"prorlv2/seed0": full, "no_dynamic_sampling/seed0": nods}
  c = C.claim_dynamic_sampling(rows, (0,), full="prorlv2", no_ds="no_dynamic_sampling", target_fraction=0.8,
                               min_effect=0.02)
  target = 0.2 + 0.8 * (0.6 - 0.2)
  assert c["evidence"]["target"] == pytest.approx(target)
  # full reaches 0.52 at step 15 (validation every 5 steps: 0.2 + 0.02 * 15 = 0.5 < 0.52, step 20 -> 0.6)
  assert c["evidence"]["per_seed"]["0"]["steps_with"] == 20
  assert c["evidence"]["per_seed"]["0"]["samples_with"] == 300 * 20
  # nods: 0.2 -> 0.4 by step 20, then 0.02/step/2 -> 0.52 at step 32, validated at 35
  assert c["evidence"]["per_seed"]["0"]["steps_without"] == 35
  assert c["evidence"]["per_seed"]["0"]["samples_without"] == 100 * 35
  assert c["verdict"] == "not supported"
  rows["prorlv2/seed0"] = rows_of({"eval/score@1": _validation(0.2, 0.6, 0.6), "rollout/samples": [100] * 41})
  c = C.claim_dynamic_sampling(rows, (0,), full="prorlv2", no_ds="no_dynamic_sampling", target_fraction=0.8,
                               min_effect=0.02)
  assert c["verdict"] == "supported"


def test_continued_improvement_claim():
  evals = {f"prorlv2/seed{s}/step{st}": summary({"chain/L1": v}) for s in SEEDS for st, v in ((20, 0.4), (40, 0.6))}
  c = C.claim_continued(evals, {}, SEEDS, variant="prorlv2", steps=[0, 20, 40], total_steps=40, k=8,
                        min_effect=0.02)
  assert c["verdict"] == "supported"
  assert c["evidence"]["per_seed"]["0"] == {"before": pytest.approx(0.1), "after": pytest.approx(0.15)}
  # One evaluated step: falls back to the validation curve (third vs last quarter).
  rows = {f"prorlv2/seed{s}": rows_of({"eval/score@1": [0.5] * 41}) for s in SEEDS}
  c = C.claim_continued({}, rows, SEEDS, variant="prorlv2", steps=[40], total_steps=40, k=8, min_effect=0.02)
  assert c["verdict"] == "not supported" and "validation" in c["summary"]


def test_evaluate_claims_missing_variant_is_inconclusive_and_report_renders(tmp_path):
  rows = {"prorlv2/seed0": rows_of({"eval/score@1": _validation(0.2, 0.4, 0.5), "entropy": [0.5] * 41,
                                     "kl": [0.0] * 41, "ref_resets": [0] * 41, "rollout/samples": [10] * 41,
                                     "response_length/mean": [20.0] * 41, "pg_clipfrac": [0.01] * 41,
                                     "eval/pass@1": [0.1] * 41})}
  evals = {"base": summary({"chain/L1": 0.8, "chain/L5": 0.1}),
           "prorlv2/seed0/step40": summary({"chain/L1": 0.7, "chain/L5": 0.3})}
  claims = C.evaluate_claims(rows, evals, claims={**CLAIMS, "easy": "chain/L1", "hard": "chain/L5"}, seeds=(0,),
                             eval_steps=(0, 40), total_steps=40, k=8)
  assert [c["id"] for c in claims] == ["a", "b", "c", "d", "e"]
  assert claims[0]["verdict"] == "supported"
  for c in claims[1:4]:
    assert c["verdict"] == "inconclusive" and "did not run" in c["summary"]
  content = report.claims_json(claims, ["prorlv2"], [0], 12.5)
  assert set(content) == {"claims", "variants", "seeds", "wall_seconds"}
  json.dumps(C._finite(content), allow_nan=False)
  pngs = [report.plot_pass_at_k(evals, "prorlv2", (0,), (0, 40), tmp_path / "pass_at_k_prorlv2.png"),
          report.plot_scores(rows, evals, (0,), (0, 40), ["chain/L5"], ["chain/L1"], 8, tmp_path / "s.png"),
          report.plot_dynamics(rows, tmp_path / "d.png")]
  for p in pngs:
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  text = report.markdown(title="t", command="python -m experiments.study", claims=claims, evals=evals,
                         runs=[{"name": "prorlv2/seed0", "overrides": [], "seconds": 60.0, "final_score": 0.5,
                                "returncode": 0}], variants={"prorlv2": []}, seeds=(0,), steps=(0, 40), k=8,
                         wall_seconds=125.0, pngs=pngs)
  assert "| a |" in text and "**supported**" in text and "chain/L5" in text and "0.300" in text
  assert "## Per claim, per seed" in text and "| seed | hard_by_step.40 |" in text


def test_claim_table_has_mean_and_spread_over_seeds():
  evidence = {"per_seed": {"0": {"gain": 0.1, "by_step": {"24": 0.2}, "resets": [36, 48]},
                           "1": {"gain": 0.3, "by_step": {"24": 0.4}, "resets": []}}}
  lines = report.claim_table(evidence)
  assert lines[0] == "| seed | gain | by_step.24 | resets |"
  assert lines[2] == "| 0 | 0.1 | 0.2 | 36, 48 |" and lines[3] == "| 1 | 0.3 | 0.4 | none |"
  assert lines[4] == "| mean | 0.2 | 0.3 |  |"
  assert lines[5] == f"| sd | {np.std([0.1, 0.3], ddof=1):.4g} | {np.std([0.2, 0.4], ddof=1):.4g} |  |"
  assert report.claim_table({"per_seed": {}}) == []


def test_dynamic_sampling_claim_without_improvement_is_untested():
  flat = rows_of({"eval/score@1": [0.3] * 41, "rollout/samples": [100] * 41})
  rows = {"prorlv2/seed0": flat, "no_dynamic_sampling/seed0": rows_of({"eval/score@1": _validation(0.3, 0.2, 0.25),
                                                                       "rollout/samples": [100] * 41})}
  c = C.claim_dynamic_sampling(rows, (0,), full="prorlv2", no_ds="no_dynamic_sampling", target_fraction=0.8,
                               min_effect=0.02)
  assert c["verdict"] == "inconclusive" and c["summary"].startswith("untested")
  # Only one variant improved: the target is on its way up; the other never reaches it (dynamic sampling wins).
  rows["prorlv2/seed0"] = rows_of({"eval/score@1": _validation(0.3, 0.5, 0.5), "rollout/samples": [100] * 41})
  c = C.claim_dynamic_sampling(rows, (0,), full="prorlv2", no_ds="no_dynamic_sampling", target_fraction=0.8,
                               min_effect=0.02)
  assert c["evidence"]["target"] == pytest.approx(0.46)
  assert c["evidence"]["per_seed"]["0"]["samples_without"] is None  # inf -> null in JSON
  assert c["verdict"] == "supported"
