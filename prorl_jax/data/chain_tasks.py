"""The "chain" suite: arithmetic chains whose difficulty is the number of steps, for asking where RL moves the
reasoning boundary (issue 21; ProRL P1 §4).

A level-L problem adds and subtracts L one-digit numbers to a starting number, "Compute 7 + 5 - 3 + 8.", and its
reference response works through the chain one step per line, each step an easy operation on the running total:

  7 + 5 = 12
  12 - 3 = 9
  9 + 8 = 17
  \\boxed{17}

Every step is easy; what grows with L is how long the model must keep the chain straight, and the response (about
eight tokens per step, tens of tokens at the harder levels). A model warm-started on the easy levels solves them
often and the held-out harder levels rarely, even with many samples: the regime where ProRL says prolonged RL expands
what a model can solve rather than only sharpening it. Scored by the math verifier (the `\\boxed{}` answer).
Running totals stay within [0, 99] so every number is one or two digits.

Each example's `extra` carries `level` and `benchmark` ("chain/L3"), so evaluation reports per level. Splits are
disjoint by content hash (`embedded.common.split_of`), so validation problems are never trained on.
"""

from __future__ import annotations

import random
from typing import Sequence

from prorl_jax.data.embedded.common import interleave, make_rng, split_of
from prorl_jax.data.schema import DataError, Example

MAX_LEVEL = 12
DEFAULT_LEVELS = (1, 2, 3)
_MAX_START, _MAX_TOTAL = 29, 99


def chain_problem(rng: random.Random, level: int) -> tuple[str, int, str]:
  """(prompt, answer, reference response) of one level-`level` chain."""
  total = rng.randint(0, _MAX_START)
  terms, lines = [str(total)], []
  for _ in range(level):
    b = rng.randint(1, 9)
    subtract = total - b >= 0 and (total + b > _MAX_TOTAL or rng.random() < 0.5)
    new = total - b if subtract else total + b
    op = "-" if subtract else "+"
    terms.append(f"{op} {b}")
    lines.append(f"{total} {op} {b} = {new}")
    total = new
  reference = "\n".join(lines + [f"\\boxed{{{total}}}"])
  return f"Compute {' '.join(terms)}.", total, reference


def parse_levels(text: str) -> tuple[int, ...]:
  """"1-3" -> (1, 2, 3); "1,4,6" -> (1, 4, 6); each level in 1..MAX_LEVEL."""
  try:
    levels: list[int] = []
    for part in str(text).split(","):
      lo, _, hi = part.strip().partition("-")
      levels.extend(range(int(lo), int(hi or lo) + 1))
  except ValueError:
    levels = []
  if not levels or any(not 1 <= lv <= MAX_LEVEL for lv in levels):
    raise DataError("data", f"names chain levels {text!r}",
                    f"give levels in 1..{MAX_LEVEL} as a range or list, e.g. levels=1-3 or levels=1,4,6")
  return tuple(sorted(set(levels)))


def chain_dataset(size: int, *, seed: int = 0, split: str = "train", levels: Sequence[int] = DEFAULT_LEVELS,
                  with_reference: bool = True, allow_fewer: bool = False) -> list[Example]:
  """`size` chain problems split evenly over `levels`, interleaved level by level, deterministic in the arguments.

  With `with_reference`, `extra["reference"]` holds the worked response (the warm-start SFT target). A level with
  fewer distinct problems than its share (level 1 has a few hundred per split) raises, or with `allow_fewer` gives
  all it has.
  """
  if split not in ("train", "validation"):
    raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
  levels = tuple(levels)
  per_level = [size // len(levels) + (i < size % len(levels)) for i in range(len(levels))]
  by_level = []
  for level, count in zip(levels, per_level):
    rng = make_rng("chain", seed, level)
    seen, examples, draws = set(), [], 0
    while len(examples) < count:
      draws += 1
      if draws > 50 * count + 1000:
        if allow_fewer:
          break
        total = sum(per_level)
        raise DataError("size", f"is {total}: chain level {level} has only {len(examples)} distinct {split} "
                        f"problems, fewer than its share {count}",
                        f"ask for at most {len(examples) * len(levels)} problems over levels {list(levels)}, or "
                        "leave out the easiest levels")
      prompt, answer, reference = chain_problem(rng, level)
      if prompt in seen or split_of("chain", prompt) != split:
        continue
      seen.add(prompt)
      extra = {"source": "chain", "level": level, "benchmark": f"chain/L{level}",
               **({"reference": reference} if with_reference else {})}
      examples.append(Example(id=f"chain/{split}/s{seed}/L{level}/{len(examples)}", domain="math", prompt=prompt,
                              ground_truth=str(answer), extra=extra))
    by_level.append(examples)
  return interleave(by_level)
