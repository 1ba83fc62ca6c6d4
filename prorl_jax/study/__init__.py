"""Studies: ProRL's claims tested by ablation, not only its recipe run (`python -m experiments.study`).

A study is a base training config, named variants (config overrides) and seeds (`spec`); every (variant, seed) is
an ordinary training run in its own directory (`runs`), chosen checkpoints are evaluated with many samples per
problem (`measure`), the claims are computed from those numbers (`claims`), and `report` writes report.md,
claims.json and the plots.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Sequence

import ml_collections

from prorl_jax.study import claims as claims_lib
from prorl_jax.study import measure, report, runs as runs_lib
from prorl_jax.study.runs import StudyStopped
from prorl_jax.study.spec import Run, Study, apply_overrides, resolve, study_config

STATE_FILE = "study_time.json"


def run_study(config: ml_collections.ConfigDict, config_file: str, workdir: str, *, smoke: bool = False,
              variants: Sequence[str] = (), seeds: Sequence[int] = (), command: str = "",
              log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs (or continues) the study and writes its report; returns the claims.json content.

  Raises:
    ConfigError: a bad study config, variant or override (before anything runs).
    StudyStopped: a signal stopped the runs (they are resumable).
  """
  start = time.perf_counter()
  study = resolve(config, config_file, workdir, smoke=smoke, variants=variants, seeds=seeds)
  study.workdir.mkdir(parents=True, exist_ok=True)
  state_path = study.workdir / STATE_FILE
  earlier = json.loads(state_path.read_text()).get("seconds", 0.0) if state_path.exists() else 0.0
  try:
    log(f"[study] {len(study.runs)} runs ({', '.join(study.variants)} × seeds "
        f"{', '.join(map(str, study.seeds))}) in {study.workdir}")
    outcomes = runs_lib.run_all(study, list(study.runs), log=log)
    ok = [o.run for o in outcomes if o.ok]
    rows = {run.name: runs_lib.read_metrics(run) for run in ok}
    evals = measure.evaluate(study, ok, log=log)
  finally:
    wall = earlier + time.perf_counter() - start
    state_path.write_text(json.dumps({"seconds": round(wall, 1)}) + "\n")
  return write_report(study, outcomes, rows, evals, wall, command=command)


def write_report(study: Study, outcomes: Sequence[runs_lib.RunOutcome], rows: dict[str, list[dict]],
                 evals: dict[str, Any], wall: float, *, command: str = "") -> dict[str, Any]:
  """Computes the claims and writes claims.json, report.md and the PNGs into the study's workdir."""
  out = study.workdir
  k = int(study.eval.num_samples)
  steps = study.eval_steps()
  claims = claims_lib.evaluate_claims(rows, evals, claims=study.claims, seeds=study.seeds, eval_steps=steps,
                                      total_steps=study.total_steps, k=k)
  easy = [b for b in str(study.claims.easy).split(",") if b]
  hard = [b for b in str(study.claims.hard).split(",") if b]
  pngs = []
  for variant in study.eval_variants():
    png = report.plot_pass_at_k(evals, variant, study.seeds, steps, out / f"pass_at_k_{variant}.png")
    if png is not None:
      pngs.append(png)
  if rows:
    pngs.append(report.plot_scores(rows, evals, study.seeds, steps, hard, easy, k, out / "scores_vs_steps.png"))
    pngs.append(report.plot_dynamics(rows, out / "dynamics.png"))
  run_rows = []
  for o in outcomes:
    r = rows.get(o.run.name, [])
    final = claims_lib.series(r, claims_lib.VALIDATION_KEY)[1]
    own = o.run.overrides[len(study.common_overrides):]
    run_rows.append({"name": o.run.name, "overrides": [x for x in own if not x.startswith("seed=")],
                     "seconds": o.seconds, "final_score": final[-1] if final else float("nan"),
                     "returncode": o.returncode})
  variant_overrides = {v: next((r["overrides"] for r in run_rows if r["name"].startswith(v + "/")), [])
                       for v in study.variants}
  notes = [f"Runs that failed: {', '.join(r['name'] for r in run_rows if r['returncode'])} (see their train.log)"
           ] if any(r["returncode"] for r in run_rows) else []
  notes.append("Overrides of every run: " + (" ".join(f"`{x}`" for x in study.common_overrides) or "none")
               + f" (base config: `{study.base_file.name}`).")
  text = report.markdown(title="ProRL's claims, measured", command=command or "python -m experiments.study",
                         claims=claims, evals=evals, runs=run_rows, variants=variant_overrides, seeds=study.seeds,
                         steps=steps, k=k, wall_seconds=wall, pngs=pngs, notes=notes,
                         evaluated=study.eval_variants())
  (out / "report.md").write_text(text)
  content = report.claims_json(claims, study.variants, study.seeds, wall,
                               runs=[{k_: v for k_, v in r.items()} for r in run_rows], eval_steps=list(steps),
                               eval_samples=k)
  (out / "claims.json").write_text(json.dumps(claims_lib._finite(content), indent=2) + "\n")
  return content


__all__ = ["Run", "Study", "StudyStopped", "apply_overrides", "resolve", "run_study", "study_config",
           "write_report"]
