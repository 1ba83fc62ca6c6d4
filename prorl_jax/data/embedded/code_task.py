"""The shape of a generated code problem, shared by the call-based and stdin templates."""

from __future__ import annotations

import dataclasses
import random
import string
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class CodeTask:
  """A problem statement with its reference solution, an oracle and a test-input sampler.

  `make_input(rng)` returns one test input: an argument list (call-based) or stdin text. `oracle` maps an input
  to the expected output (called with `*args` when call-based).
  """

  statement: str
  solution: str
  oracle: Callable[..., Any]
  make_input: Callable[[random.Random], Any]
  fn_name: str | None = None


def ints(rng: random.Random, lo: int, hi: int, n_lo: int = 0, n_hi: int = 12) -> list[int]:
  return [rng.randint(lo, hi) for _ in range(rng.randint(n_lo, n_hi))]


def word(rng: random.Random, lo: int = 2, hi: int = 8) -> str:
  return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(lo, hi)))
