"""Helpers shared by the embedded generators: content-hash splits, seed derivation, number formatting."""

from __future__ import annotations

import dataclasses
import fractions
import hashlib
import random
from typing import Any

SPLITS = ("train", "validation")
# Share of the problem space reserved for validation. The split is a function of the problem text alone, so a
# problem can never be in both splits, whatever the seeds.
VALIDATION_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class Problem:
  """A generated problem before it becomes an `Example` (id and split are assigned by the driver).

  `split_key` is the text that decides the split (default: the prompt). It names the problem without incidental
  parts (a code problem's worked example, the order of multiple-choice options), so the same problem can never
  land in both splits in two guises.
  """

  prompt: str
  ground_truth: Any
  extra: dict[str, Any]
  split_key: str | None = None


def split_of(domain: str, text: str) -> str:
  """The split `text` belongs to: 'validation' for a stable VALIDATION_FRACTION of texts, else 'train'."""
  digest = hashlib.blake2b(f"{domain}\0{text}".encode(), digest_size=8).digest()
  return "validation" if int.from_bytes(digest, "big") < VALIDATION_FRACTION * 2**64 else "train"


def derive_seed(*parts: Any) -> int:
  """A 32-bit seed from any printable parts (stable across runs, unlike `hash`)."""
  digest = hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=4).digest()
  return int.from_bytes(digest, "big")


def make_rng(*parts: Any) -> random.Random:
  return random.Random(derive_seed(*parts))


def interleave(groups: list[list[Any]]) -> list[Any]:
  """One item of each group in turn while all have items, then the longer groups' rest in group order."""
  mixed = [item for round_ in zip(*groups) for item in round_]
  shortest = min(map(len, groups)) if groups else 0
  return mixed + [item for group in groups for item in group[shortest:]]


def latex_number(value: fractions.Fraction | int) -> str:
  """An exact answer string Math-Verify parses: "7", "-3", "\\frac{2}{3}", "-\\frac{5}{4}"."""
  value = fractions.Fraction(value)
  if value.denominator == 1:
    return str(value.numerator)
  sign = "-" if value < 0 else ""
  return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"
