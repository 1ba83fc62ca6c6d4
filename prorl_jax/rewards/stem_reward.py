"""Binary multiple-choice STEM reward (ALGORITHMS.md §12: GPQA-Diamond style evaluation, SCP-116K training).

The response's committed option letter (`extraction.extract_choice`, read after `</think>`) must equal the gold
letter. Options A-J are allowed (MMLU-Pro has ten; GPQA four). A response that claims several different letters
(`\\boxed{A} ... The answer is B`) is ambiguous and scores 0, so listing every option cannot earn a reward; so does
one that claims none, or that never closes `<think>`.

Free-form STEM answers (numbers, formulas) are math answers: grade them with `math_reward.score_math`.
"""

from __future__ import annotations

import re

from prorl_jax.rewards import extraction

__all__ = ["CHOICES", "parse_choice_ground_truth", "score_stem"]

CHOICES = extraction.DEFAULT_CHOICES


def parse_choice_ground_truth(ground_truth: str, choices: str = CHOICES) -> str:
  """The gold option letter, uppercase: accepts "C", "c", "(C)", "C)", "C.", "\\boxed{C}", "$C$".

  Raises:
    ValueError: not a string, or not exactly one letter among `choices`.
  """
  if not isinstance(ground_truth, str):
    raise ValueError(f"stem ground_truth must be the correct option letter as a string (one of {choices}), got "
                     f"{type(ground_truth).__name__}: {ground_truth!r}")
  text = extraction.last_boxed(ground_truth) or ground_truth
  text = re.sub(r"\\text\{([^{}]*)\}", r"\1", text).replace("$", "").strip()
  match = re.fullmatch(r"\(?([A-Za-z])[).]?", text)
  letter = match.group(1).upper() if match else None
  if letter is None or letter not in choices:
    raise ValueError(f"stem ground_truth must be one option letter among {choices} (e.g. 'C'), got "
                     f"{ground_truth!r}; free-form answers belong to the math verifier (score_math)")
  return letter


def score_stem(response: str, ground_truth: str) -> float:
  """1.0 if the response commits to exactly the gold option letter, else 0.0.

  Args:
    response: decoded model output; only the text after the last `</think>` is read. Recognised claims:
      `\\boxed{C}`, `<answer>C</answer>`, "Answer: C", "The answer is (C)", "the correct option is **C**", and a
      final line that is just the letter ("**C**").
    ground_truth: the correct letter, A-J (see `parse_choice_ground_truth` for accepted spellings).

  Returns:
    1.0 or 0.0; 0.0 for an empty, malformed, ambiguous or truncated response.

  Raises:
    ValueError: malformed ground truth.
  """
  gold = parse_choice_ground_truth(ground_truth)
  return float(extraction.extract_choice(response, CHOICES) == gold)
