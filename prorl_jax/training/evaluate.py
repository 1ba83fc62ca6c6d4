"""`experiments.evaluate` as a function: load checkpoints (Hugging Face, or the trainer's Orbax checkpoints) and
benchmarks from a config, evaluate each checkpoint with `prorl_jax.evaluation` (resumably), write summaries and the
pass@k plot. Here rather than in `evaluation` because it reads the trainer's checkpoints and config."""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from prorl_jax import evaluation, models, rollout
from prorl_jax.evaluation.checkpoint_eval import benchmark_of, evaluate_checkpoint
from prorl_jax.data.specs import load_spec, spec_label
from prorl_jax.evaluation.plots import plot_pass_at_k
from prorl_jax.evaluation.runner import EvalSettings
from prorl_jax.rewards import RewardManager
from prorl_jax.training import checkpointing, multihost
from prorl_jax.training.config import check_known_fields


def eval_settings(config: ml_collections.ConfigDict) -> EvalSettings:
  e = config.eval
  return EvalSettings(num_samples=e.num_samples, temperature=e.temperature, top_p=e.top_p, top_k=e.top_k,
                      max_new_tokens=e.max_new_tokens or config.rollout.max_new_tokens, seed=config.seed,
                      batch_prompts=e.batch_prompts)


def load_benchmarks(config: ml_collections.ConfigDict, specs: Sequence[str] = (), limit: int | None = None):
  """(examples, benchmark label per example) from `specs`, else config.eval.benchmarks, else data.validation."""
  specs = list(specs) or [s for s in config.eval.benchmarks.split(";") if s] or [
      s for s in config.data.validation.split(";") if s]
  if not any(specs):
    raise ValueError("no benchmarks: pass --benchmarks or set config.eval.benchmarks / config.data.validation")
  examples, labels = [], []
  for spec in specs:
    loaded = load_spec(spec, split=config.data.validation_split, seed=config.seed,
                       limit=limit or config.data.validation_size or None, what=f"benchmark {spec!r}")
    several_domains = len({e.domain for e in loaded}) > 1
    for e in loaded:
      default = f"{spec_label(spec)}/{e.domain}" if several_domains else spec_label(spec)
      labels.append(benchmark_of(e, default))
      examples.append(e)
  return examples, labels


def load_policy(checkpoint: str, config: ml_collections.ConfigDict):
  """(model config, params, tokenizer, id) from a HF directory / hub id, or from one of our Orbax checkpoints
  (architecture and tokenizer then come from config.model.path)."""
  kw = dict(dtype=jnp.dtype(config.model.param_dtype), compute_dtype=config.model.compute_dtype,
            attention_impl=config.model.attention_impl)
  orbax = checkpointing.resolve_orbax_checkpoint(checkpoint)
  if orbax is not None:
    directory, step = orbax
    model_config, base = models.load_hf(config.model.path, revision=config.model.revision or None, **kw)
    checkpointer = checkpointing.Checkpointer(directory, async_save=False)
    try:
      step, params = _restore_params(checkpointer, step, base)
    finally:
      checkpointer.close()
    tokenizer_path, ident = config.tokenizer.path or config.model.path, f"{directory}@{step}"
  else:
    model_config, params = models.load_hf(checkpoint, **kw)
    has_tokenizer = os.path.isdir(checkpoint) and any(
        os.path.exists(os.path.join(checkpoint, f)) for f in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer_path = checkpoint if has_tokenizer or not os.path.isdir(checkpoint) else (
        config.tokenizer.path or config.model.path)
    ident = os.path.abspath(checkpoint) if os.path.isdir(checkpoint) else checkpoint
  tokenizer = models.load_tokenizer(tokenizer_path, chat_template=config.tokenizer.chat_template or None)
  return model_config, params, tokenizer, ident


def _restore_params(checkpointer: checkpointing.Checkpointer, step: int | None, like: Any) -> tuple[int, Any]:
  """(step, policy params): of `step`, or of the newest readable step (unreadable newer ones are reported in one
  line each and skipped, but not moved: a training run may own the directory)."""
  if step is None:
    found = checkpointing.restore_newest(checkpointer, lambda s: checkpointer.restore_params(s, like),
                                         move_aside=False, using="evaluating")
    if found is None:
      raise models.CheckpointError(f"no checkpoint step in {checkpointer.directory}")
    return found
  if step not in checkpointer.all_steps():
    raise models.CheckpointError(f"no checkpoint of step {step} in {checkpointer.directory} "
                                 f"(steps there: {checkpointer.all_steps()})")
  params, why = checkpointing.attempt_read(lambda: checkpointer.restore_params(step, like))
  if why is not None:
    raise models.CheckpointError(f"checkpoint step {step} in {checkpointer.directory} cannot be read ({why})")
  return step, params


def validate(config: ml_collections.ConfigDict, sampler: Any, params: Any, examples: Sequence[Any],
             prompt_ids: Sequence[Sequence[int]], *, score_batch: Callable, decode: Callable,
             eos_token_ids: Sequence[int]) -> dict[str, float]:
  """The trainer's validation metrics (`eval/score@1`, `eval/pass@k`, `eval/<domain>/...`, `time/eval_s`) of `params` on
  `examples`, sampled as config.eval says. Each process samples every P-th problem and the results are gathered."""
  problems = evaluation.problems_from_examples(examples, [e.domain for e in examples])
  start = time.perf_counter()
  results = evaluation.evaluate_problems(
      sampler=sampler, params=params, prompt_ids=prompt_ids, problems=problems, score_batch=score_batch,
      decode=decode, eos_token_ids=eos_token_ids, settings=eval_settings(config),
      # Samples follow problem indices, so the split between processes changes nothing.
      skip=[i for i in range(len(problems)) if i % jax.process_count() != jax.process_index()])
  results = multihost.gather_results(results, evaluation.ProblemResult.to_json, evaluation.ProblemResult.from_json)
  out = {"time/eval_s": time.perf_counter() - start}
  for name, s in evaluation.summarize(results, by="domain").items():
    prefix = "eval/" if name == "all" else f"eval/{name}/"
    out.update({prefix + k: v for k, v in s.items()
                if k.startswith(("score@", "pass@")) or k in ("mean_length", "truncated_frac")})
  return multihost.from_first_process(out)  # same results everywhere; only the eval time differs


def evaluate_checkpoints(config: ml_collections.ConfigDict, checkpoints: Sequence[tuple[str, str, pathlib.Path]],
                         examples: Sequence[Any], labels: Sequence[str], *,
                         config_of: Callable[[str], ml_collections.ConfigDict] | None = None, overwrite: bool = False,
                         on_report: Callable[[Any, str], None] | None = None) -> dict[str, Any]:
  """Evaluates each (label, checkpoint, out_dir) on `examples` (benchmark label of each in `labels`), resumably, with
  one reward process pool; checkpoints of the same architecture share one sampler and its compiled programs.

  `config_of(label)` gives a checkpoint's own config (e.g. its run's seed, which seeds the samples), default
  `config`. `on_report(report, checkpoint id)` is called as each finishes. Returns {label: CheckpointReport}.
  """
  reports, samplers = {}, []
  manager = RewardManager(config.rewards.num_workers or None, timeout_s=config.rewards.timeout_s,
                          code_timeout_s=config.rewards.code_timeout_s,
                          preload=sorted({e.domain for e in examples}))
  try:
    for label, checkpoint, out_dir in checkpoints:
      c = config if config_of is None else config_of(label)
      model_config, params, tokenizer, ident = load_policy(checkpoint, c)
      eos = set(model_config.eos_token_ids) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None
                                               else set())
      pad_id = tokenizer.pad_token_id or 0
      sampler = next((s for (mc, pad), s in samplers if mc == model_config and pad == pad_id), None)
      if sampler is None:
        sampler = rollout.Sampler(model_config, pad_id=pad_id, batching=c.rollout.batching)
        samplers.append(((model_config, pad_id), sampler))
      reports[label] = evaluate_checkpoint(
          label=label, checkpoint_id=ident, sampler=sampler, params=params, tokenizer=tokenizer, examples=examples,
          benchmarks=labels, score_batch=lambda d, t, g: manager.score_batch(d, t, g).scores,
          eos_token_ids=sorted(eos), settings=eval_settings(c), out_dir=out_dir,
          system_prompt=c.tokenizer.system_prompt or None, overwrite=overwrite)
      if on_report is not None:
        on_report(reports[label], ident)
  finally:
    manager.close()
  return reports


def run_evaluation(config: ml_collections.ConfigDict, checkpoints: Sequence[tuple[str, str]],
                   workdir: str | os.PathLike, *, specs: Sequence[str] = (), limit: int | None = None,
                   overwrite: bool = False) -> dict[str, Any]:
  """Evaluates each (label, checkpoint) on the benchmarks; returns {"score@1": {label: {benchmark: value}},
  "pass@1": {...}, "summary": {label: {benchmark: summary}}, ...} (score@1 is ProRL's headline mean score, pass@1
  the fully correct share; see `evaluation.summary`)."""
  check_known_fields(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  examples, labels = load_benchmarks(config, specs, limit)
  settings = eval_settings(config)
  reports = evaluate_checkpoints(
      config, [(label, checkpoint, workdir / label) for label, checkpoint in checkpoints], examples, labels,
      overwrite=overwrite,
      on_report=lambda report, ident: print(f"\n== {report.label}: {ident}\n{report.table()}", flush=True))
  png = plot_pass_at_k({label: r.summary for label, r in reports.items()}, workdir / "pass_at_k.png",
                       title=f"pass@k, {settings.num_samples} samples, T={settings.temperature}")
  combined = {"settings": {"num_samples": settings.num_samples, "temperature": settings.temperature,
                           "top_p": settings.top_p, "max_new_tokens": settings.max_new_tokens},
              "checkpoints": {label: str(dict(checkpoints)[label]) for label in reports},
              "score@1": {label: {b: s["score@1"] for b, s in r.summary.items()} for label, r in reports.items()},
              "pass@1": {label: {b: s["pass@1"] for b, s in r.summary.items()} for label, r in reports.items()},
              "summary": {label: r.summary for label, r in reports.items()}, "plot": str(png)}
  (workdir / "summary.json").write_text(json.dumps(combined, indent=2) + "\n")
  print(f"\npass@k plot: {png}\nsummary: {workdir / 'summary.json'}", flush=True)
  return combined


__all__ = ["eval_settings", "evaluate_checkpoints", "load_benchmarks", "load_policy", "run_evaluation", "validate"]
