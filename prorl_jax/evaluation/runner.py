"""Sampling k responses per problem and scoring them: the evaluation loop shared by the trainer and
`experiments.evaluate`.

Each problem's samples are drawn from PRNG rows fixed by the problem's position in the list, so a problem gets the
same responses whether it is evaluated alone, in another batch, or after a resume.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from prorl_jax import rollout


@dataclasses.dataclass
class ProblemResult:
  """All samples of one problem. `scores` are the verifier's rewards in [0, 1]."""

  index: int
  id: str
  benchmark: str
  domain: str
  scores: list[float]
  lengths: list[int]
  finished_by_eos: list[bool]
  responses: list[str] | None = None

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, row: dict[str, Any]) -> "ProblemResult":
    return cls(**{f.name: row.get(f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """How problems are sampled (ProRL: 16 samples, temperature 0.6, top-p 0.95)."""

  num_samples: int = 16
  temperature: float = 0.6
  top_p: float = 0.95
  top_k: int = 0
  max_new_tokens: int = 1024
  seed: int = 0
  batch_prompts: int = 64
  keep_responses: bool = False


def evaluate_problems(*, sampler: rollout.Sampler, params: Any, prompt_ids: Sequence[Sequence[int]],
                      problems: Sequence[dict[str, Any]], score_batch: Callable[..., np.ndarray],
                      decode: Callable[[Sequence[int]], str], eos_token_ids: Sequence[int],
                      settings: EvalSettings, skip: Iterable[int] = (),
                      on_result: Callable[[ProblemResult], None] | None = None) -> list[ProblemResult]:
  """Samples and scores `settings.num_samples` responses for each problem.

  Args:
    sampler: the rollout sampler (its config picks the model and attention backend).
    params: policy parameters.
    prompt_ids: the encoded prompt of each problem.
    problems: per problem a dict with "id", "benchmark", "domain" and "ground_truth".
    score_batch: `(domains, responses, ground_truths) -> float array`, e.g. a RewardManager's scores.
    decode: token ids -> response text (special tokens stripped).
    eos_token_ids: ids that end a response.
    settings: sampling settings.
    skip: indices of problems already scored (resume); they are not sampled again.
    on_result: called with each finished problem (e.g. to append it to a results file).

  Returns:
    The results of the problems evaluated by this call, in problem order.
  """
  if len(prompt_ids) != len(problems):
    raise ValueError(f"{len(prompt_ids)} prompts but {len(problems)} problems")
  skip = set(skip)
  todo = [i for i in range(len(problems)) if i not in skip]
  sampling = rollout.SamplingParams(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
  n = settings.num_samples
  results = []
  for start in range(0, len(todo), settings.batch_prompts):
    batch_idx = todo[start:start + settings.batch_prompts]
    # Row keys follow the problem's global index, not its batch, so resumed runs draw the same samples.
    rows = [i * n for i in batch_idx]
    out = sampler.generate(params, [prompt_ids[i] for i in batch_idx], max_new_tokens=settings.max_new_tokens,
                           sampling=sampling, num_samples=n, eos_token_ids=list(eos_token_ids),
                           seed=settings.seed, row_ids=np.concatenate([np.arange(r, r + n) for r in rows]))
    texts = [decode(out.response(r)) for r in range(len(out.lengths))]
    domains = [problems[i]["domain"] for i in batch_idx for _ in range(n)]
    truths = [problems[i]["ground_truth"] for i in batch_idx for _ in range(n)]
    scores = np.asarray(score_batch(domains, texts, truths), np.float64)
    for j, i in enumerate(batch_idx):
      sl = slice(j * n, (j + 1) * n)
      result = ProblemResult(index=i, id=str(problems[i]["id"]), benchmark=problems[i]["benchmark"],
                             domain=problems[i]["domain"], scores=scores[sl].tolist(),
                             lengths=out.lengths[sl].tolist(), finished_by_eos=out.finished_by_eos[sl].tolist(),
                             responses=texts[sl] if settings.keep_responses else None)
      results.append(result)
      if on_result is not None:
        on_result(result)
  return results
