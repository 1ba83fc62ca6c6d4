"""The study's large-k evaluation: the chosen checkpoints of the chosen runs, k samples per problem, per benchmark
(difficulty level). Step 0 is the base model every run starts from, evaluated once. Each checkpoint's results go to
`<study>/eval/<variant>/seed<N>/step<S>/results.jsonl` (the base's to `<study>/eval/base/`) and resume like
`experiments.evaluate`'s.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

import ml_collections

from prorl_jax.study.spec import Run, Study

Summary = dict[str, dict[str, float]]  # benchmark -> summarize_group() numbers


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  label: str  # "base" or "<variant>/seed<N>/step<S>"
  source: str  # HF directory or "<run>@<step>"
  out_dir: pathlib.Path
  step: int
  variant: str | None = None
  seed: int | None = None


def eval_config(study: Study, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` (a run's training config) with the study's evaluation settings."""
  c = ml_collections.ConfigDict(config.to_dict())
  e = study.eval
  c.eval.num_samples = int(e.num_samples)
  c.eval.temperature = float(e.temperature)
  c.eval.top_p = float(e.top_p)
  c.eval.batch_prompts = int(e.batch_prompts)
  if int(e.max_new_tokens):
    c.eval.max_new_tokens = int(e.max_new_tokens)
  return c


def checkpoints(study: Study, runs: list[Run]) -> list[Checkpoint]:
  """What to evaluate: the base once (if step 0 is asked for), then each evaluated run's other steps."""
  out = []
  steps = study.eval_steps()
  if 0 in steps:
    out.append(Checkpoint("base", str(study.base.model.path), study.workdir / "eval" / "base", 0))
  for run in runs:
    if run.variant not in study.eval_variants():
      continue
    for step in steps:
      if step:
        out.append(Checkpoint(f"{run.name}/step{step}", f"{run.workdir}@{step}",
                              study.workdir / "eval" / run.variant / f"seed{run.seed}" / f"step{step}", step,
                              run.variant, run.seed))
  return out


def evaluate(study: Study, runs: list[Run], *, log: Callable[[str], None] = print) -> dict[str, Summary]:
  """Evaluates every checkpoint of `checkpoints(study, runs)`; returns {label: {benchmark: summary}}."""
  from prorl_jax.training.evaluate import evaluate_checkpoints, load_benchmarks

  todo = checkpoints(study, runs)
  if not todo:
    return {}
  config = eval_config(study, study.base)
  specs = [s for s in str(study.eval.benchmarks).split(";") if s]
  examples, labels = load_benchmarks(config, specs, int(study.eval.limit) or None)
  run_of = {c.label: next(r for r in runs if (r.variant, r.seed) == (c.variant, c.seed)) for c in todo if c.variant}
  # A checkpoint is sampled with its run's seed; the base with the study's.
  config_of = lambda label: eval_config(study, study.run_config(run_of[label])) if label in run_of else config

  def logged(report, _ident):
    overall = report.summary.get("all", {})
    k = overall.get("num_samples", 0)
    log(f"[study] evaluated {report.label}: score@1 {overall.get('score@1', float('nan')):.3f}, "
        f"pass@{k} {overall.get(f'pass@{k}', float('nan')):.3f}")

  reports = evaluate_checkpoints(config, [(c.label, c.source, c.out_dir) for c in todo], examples, labels,
                                 config_of=config_of, on_report=logged)
  return {label: r.summary for label, r in reports.items()}
