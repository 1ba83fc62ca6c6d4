"""An embedded multi-domain RL dataset that needs no download: ProRL's five domains in miniature.

`embedded_dataset(size, seed=..., split=...)` is deterministic in its arguments. Each domain draws problems from
its own seeded stream (independent of `size` and `split`, so a larger dataset extends a smaller one) and keeps
those whose content hash puts them in the requested split (`common.split_of`): train and validation can never
share a problem, for any seeds. Duplicate prompts within a call are redrawn.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

from prorl_jax.data.embedded import code_problems, ifeval_prompts, math_problems, stem_problems
from prorl_jax.data.embedded.common import SPLITS, VALIDATION_FRACTION, Problem, make_rng, split_of
from prorl_jax.data.embedded.logic_tasks import DEFAULT_TASKS as DEFAULT_LOGIC_TASKS
from prorl_jax.data.embedded.logic_tasks import LogicGenerator
from prorl_jax.data.schema import DOMAINS, Example

DEFAULT_DOMAINS = DOMAINS
# Give up when this many draws per requested example produce nothing new for the split.
_MAX_DRAWS_PER_EXAMPLE = 60

__all__ = ["DEFAULT_DOMAINS", "DEFAULT_LOGIC_TASKS", "SPLITS", "VALIDATION_FRACTION", "embedded_dataset",
           "split_of"]


def _allocate(size: int, weights: Mapping[str, float]) -> dict[str, int]:
  """Splits `size` over domains in proportion to `weights` (largest remainder, ties in the given order)."""
  total = sum(weights.values())
  exact = {d: size * w / total for d, w in weights.items()}
  counts = {d: int(v) for d, v in exact.items()}
  order = sorted(weights, key=lambda d: -(exact[d] - counts[d]))
  for d in order[:size - sum(counts.values())]:
    counts[d] += 1
  return counts


def _generator(domain: str, seed: int, logic_tasks: Sequence[str]) -> Callable[[random.Random], Problem]:
  if domain == "logic":
    return LogicGenerator(seed, tuple(logic_tasks))
  return {"math": math_problems.generate, "code": code_problems.generate, "stem": stem_problems.generate,
          "ifeval": ifeval_prompts.generate}[domain]


def embedded_dataset(size: int, *, seed: int = 0, domains: Sequence[str] | Mapping[str, float] = DEFAULT_DOMAINS,
                     split: str = "train", logic_tasks: Sequence[str] = DEFAULT_LOGIC_TASKS) -> list[Example]:
  """Generates `size` examples mixed over `domains`, shuffled, deterministic in all arguments.

  Args:
    size: number of examples.
    seed: selects the problems (any int).
    domains: domain names (equal shares) or a mapping domain -> weight.
    split: "train" or "validation" (disjoint problem sets, see the module docstring).
    logic_tasks: Reasoning Gym task names for the logic domain.

  Returns:
    Examples with ids "embedded/<split>/s<seed>/<domain>/<k>" and `extra["source"]` naming the generator.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if size < 0:
    raise ValueError(f"size must be >= 0, got {size}")
  weights = dict(domains) if isinstance(domains, Mapping) else {d: 1.0 for d in domains}
  unknown = [d for d in weights if d not in DOMAINS]
  if unknown or not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
    raise ValueError(f"domains must name some of {DOMAINS} with non-negative weights, got {domains!r}")
  examples: list[Example] = []
  for domain, count in _allocate(size, weights).items():
    if count == 0:
      continue
    rng, generate = make_rng("embedded", seed, domain), _generator(domain, seed, logic_tasks)
    seen: set[str] = set()
    draws = 0
    while len(seen) < count:
      draws += 1
      if draws > _MAX_DRAWS_PER_EXAMPLE * count + 1000:
        raise ValueError(f"the {domain!r} generator found only {len(seen)} distinct {split} problems in {draws} "
                         f"draws; ask for fewer than {count}")
      problem = generate(rng)
      if problem.prompt in seen or split_of(domain, problem.split_key or problem.prompt) != split:
        continue
      seen.add(problem.prompt)
      examples.append(Example(id=f"embedded/{split}/s{seed}/{domain}/{len(seen) - 1}", domain=domain,
                              prompt=problem.prompt, ground_truth=problem.ground_truth,
                              extra={**problem.extra, "split": split}))
  make_rng("embedded-order", seed, split, size).shuffle(examples)
  return examples
