"""Evaluating one checkpoint on a set of benchmarks, resumably: what `experiments.evaluate` runs per checkpoint.

Results go to `<out_dir>/results.jsonl` (one line per problem, behind a settings fingerprint), so a killed run
continues with the problems not yet scored; the per-benchmark summary goes to `<out_dir>/summary.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Callable, Sequence

from prorl_jax import rollout
from prorl_jax.data import Example, encode_prompt
from prorl_jax.evaluation.results import ResultsFile, eval_fingerprint
from prorl_jax.evaluation.runner import EvalSettings, ProblemResult, evaluate_problems
from prorl_jax.evaluation.summary import format_table, summarize


def benchmark_of(example: Example, default: str) -> str:
  """The benchmark an example reports under: its `extra["benchmark"]`, else `default`."""
  return str(example.extra.get("benchmark") or default)


def problems_from_examples(examples: Sequence[Example], labels: Sequence[str]) -> list[dict[str, Any]]:
  """The `problems` dicts `evaluate_problems` takes (id, benchmark, domain, ground truth)."""
  return [{"id": e.id, "benchmark": label, "domain": e.domain, "ground_truth": e.ground_truth}
          for e, label in zip(examples, labels)]


@dataclasses.dataclass
class CheckpointReport:
  label: str
  results: list[ProblemResult]
  summary: dict[str, dict[str, float]]
  out_dir: pathlib.Path

  def table(self) -> str:
    return format_table(self.summary)


def evaluate_checkpoint(*, label: str, checkpoint_id: str, sampler: rollout.Sampler, params: Any, tokenizer: Any,
                        examples: Sequence[Example], benchmarks: Sequence[str],
                        score_batch: Callable[..., Any], eos_token_ids: Sequence[int], settings: EvalSettings,
                        out_dir: str | os.PathLike, system_prompt: str | None = None,
                        overwrite: bool = False) -> CheckpointReport:
  """Samples, scores and summarises every example; resumes from `out_dir/results.jsonl` when it matches.

  Args:
    label: a name for the checkpoint in tables and plots (e.g. "baseline", "trained").
    checkpoint_id: what identifies the weights in the results fingerprint (path, hub id, path@step).
    benchmarks: the benchmark label of each example (same length as `examples`).
    score_batch: `(domains, responses, ground_truths) -> scores`.
    Other args: as `evaluate_problems`.
  """
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  problems = problems_from_examples(examples, benchmarks)
  prompt_ids = [encode_prompt(tokenizer, e, system_prompt=system_prompt) for e in examples]
  drop = set(eos_token_ids) | {tokenizer.pad_token_id}
  decode = lambda ids: tokenizer.decode([t for t in ids if t not in drop], skip_special_tokens=False)
  fingerprint = eval_fingerprint(checkpoint=checkpoint_id, settings=settings, benchmarks=sorted(set(benchmarks)),
                                 problem_ids=[p["id"] for p in problems], system_prompt=system_prompt or "")
  store = ResultsFile(out / "results.jsonl")
  done = store.start(fingerprint, overwrite=overwrite)
  try:
    evaluate_problems(sampler=sampler, params=params, prompt_ids=prompt_ids, problems=problems,
                      score_batch=score_batch, decode=decode, eos_token_ids=eos_token_ids, settings=settings,
                      skip=done, on_result=store.append)
  finally:
    store.close()
  results = sorted(store.load(), key=lambda r: r.index)
  summary = summarize(results)
  (out / "summary.json").write_text(json.dumps({"label": label, "checkpoint": checkpoint_id,
                                                "settings": dataclasses.asdict(settings), "summary": summary},
                                               indent=2) + "\n")
  return CheckpointReport(label=label, results=results, summary=summary, out_dir=out)
