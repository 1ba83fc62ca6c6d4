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
  from prorl_jax import rollout
  from prorl_jax.evaluation.checkpoint_eval import evaluate_checkpoint
  from prorl_jax.rewards import RewardManager
  from prorl_jax.training.evaluate import eval_settings, load_benchmarks, load_policy

  todo = checkpoints(study, runs)
  if not todo:
    return {}
  config = eval_config(study, study.base)
  specs = [s for s in str(study.eval.benchmarks).split(";") if s]
  examples, labels = load_benchmarks(config, specs, int(study.eval.limit) or None)
  out: dict[str, Summary] = {}
  manager = RewardManager(config.rewards.num_workers or None, timeout_s=config.rewards.timeout_s,
                          code_timeout_s=config.rewards.code_timeout_s, preload=sorted({e.domain for e in examples}))
  try:
    sampler = None
    for ckpt in todo:
      run_config = config if ckpt.seed is None else eval_config(study, study.run_config(
          next(r for r in runs if r.variant == ckpt.variant and r.seed == ckpt.seed)))
      model_config, params, tokenizer, ident = load_policy(ckpt.source, run_config)
      eos = set(model_config.eos_token_ids) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None
                                               else set())
      if sampler is None:  # one sampler (and its compiled programs) for every checkpoint of the same model
        sampler = rollout.Sampler(model_config, pad_id=tokenizer.pad_token_id or 0,
                                  batching=config.rollout.batching)
      report = evaluate_checkpoint(
          label=ckpt.label, checkpoint_id=ident, sampler=sampler, params=params, tokenizer=tokenizer,
          examples=examples, benchmarks=labels, score_batch=lambda d, t, g: manager.score_batch(d, t, g).scores,
          eos_token_ids=sorted(eos), settings=eval_settings(run_config), out_dir=ckpt.out_dir,
          system_prompt=config.tokenizer.system_prompt or None)
      out[ckpt.label] = report.summary
      overall = report.summary.get("all", {})
      k = overall.get("num_samples", 0)
      log(f"[study] evaluated {ckpt.label}: score@1 {overall.get('score@1', float('nan')):.3f}, "
          f"pass@{k} {overall.get(f'pass@{k}', float('nan')):.3f}")
  finally:
    manager.close()
  return out
