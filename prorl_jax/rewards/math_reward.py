"""Binary math reward: HF Math-Verify, with a MATH-style string normalisation as second opinion (ALGORITHMS.md §12).

ProRL gives 1 when the final answer passes either the DeepScaleR verifier or HF Math-Verify. Here:
  1. the answer is read from the text after `</think>` (`extraction.extract_math_answer`: last `\\boxed{}`, else
     the last `<answer>` tag, else "the answer is ..."); a response that never closes `<think>` scores 0;
  2. Math-Verify (`math_verify.parse` + `verify`, symbolic and numeric equivalence) compares it with the gold;
  3. if that says no, the two strings are compared after the Hendrycks-MATH normalisation (`normalize_answer`,
     the core of DeepScaleR's `grade_answer_mathd`), which catches e.g. text answers Math-Verify cannot parse.

Math-Verify is called with `parsing_timeout=None` / `timeout_seconds=None`: its own timeouts use `signal.alarm`,
which only works in the main thread, so this function is safe in any thread or process and the reward manager
(`prorl_jax.rewards.manager`) enforces wall-clock limits around it.
"""

from __future__ import annotations

import functools
import logging
import numbers
import re

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from prorl_jax.rewards import extraction

__all__ = ["MAX_ANSWER_CHARS", "normalize_answer", "score_math"]

_EXTRACTION = (LatexExtractionConfig(), ExprExtractionConfig())
# Longer "answers" are degenerate output, not math: they skip the symbolic parser (and its cache) and get only the
# string comparison.
MAX_ANSWER_CHARS = 1000


class _DropTimeoutNotice(logging.Filter):
  """Math-Verify warns on every call made without its signal-based timeout; we disable it on purpose."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
  logging.getLogger(_name).addFilter(_DropTimeoutNotice())


def _gold_text(ground_truth: object) -> str:
  """The gold answer as a bare string: `\\boxed{3}` -> `3`, `$x=3$` -> `x=3`, 7 -> `7`."""
  if isinstance(ground_truth, bool) or not isinstance(ground_truth, (str, numbers.Number)):
    raise ValueError(f"math ground_truth must be a string or a number (the reference answer), got "
                     f"{type(ground_truth).__name__}: {ground_truth!r}")
  text = str(ground_truth).strip()
  boxed = extraction.last_boxed(text)
  if boxed is not None:
    text = boxed
  text = _strip_math_delimiters(text)
  if not text:
    raise ValueError(f"math ground_truth is empty after removing $ and \\boxed: {ground_truth!r}; "
                     "fix the dataset's answer field")
  return text


def _strip_math_delimiters(text: str) -> str:
  text = text.strip()
  for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
    if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
      return text[len(left):len(text) - len(right)].strip()
  return text


@functools.lru_cache(maxsize=8192)
def _parse(answer: str) -> tuple:
  """Math-Verify parse of a bare answer (wrapped in `\\boxed{}` so the LaTeX extractor takes all of it)."""
  parsed = parse(f"\\boxed{{{answer}}}", extraction_config=_EXTRACTION, parsing_timeout=None)
  if not parsed:
    parsed = parse(answer, extraction_config=_EXTRACTION, parsing_timeout=None)
  return tuple(parsed)


def _math_verify_equal(gold: str, pred: str) -> bool:
  if len(pred) > MAX_ANSWER_CHARS:
    return False
  gold_parsed, pred_parsed = _parse(gold), _parse(pred)
  if not gold_parsed or not pred_parsed:
    return False
  return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None))


# ---- Hendrycks MATH normalisation (the string half of DeepScaleR's grader) --------------------------------


def _fix_fracs(text: str) -> str:
  """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{2}` -> `\\frac{1}{2}`."""
  parts = text.split("\\frac")
  out = parts[0]
  for part in parts[1:]:
    out += "\\frac"
    if part.startswith("{") or len(part) < 2:
      out += part
    elif part[1] == "{":
      out += "{" + part[0] + "}" + part[1:]
    else:
      out += "{" + part[0] + "}{" + part[1] + "}" + part[2:]
  return out


def _fix_a_slash_b(text: str) -> str:
  """`3/4` (integers only) -> `\\frac{3}{4}`."""
  match = re.fullmatch(r"(-?\d+)/(\d+)", text)
  return f"\\frac{{{int(match.group(1))}}}{{{int(match.group(2))}}}" if match else text


def _fix_sqrt(text: str) -> str:
  """`\\sqrt2` -> `\\sqrt{2}`."""
  return re.sub(r"\\sqrt([^{\s\\])", r"\\sqrt{\1}", text)


_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\{([^{}]*)\}")


def normalize_answer(answer: str) -> str:
  """Hendrycks-MATH `_strip_string` normalisation (MATH paper, arXiv 2103.03874; DeepScaleR `grade_answer_mathd`).

  Drops `\\left`/`\\right`, `\\!`, degrees, `\\$`, `\\%`, trailing `\\text{ units}`, spaces and a short `k =`
  prefix; maps `\\dfrac`/`\\tfrac` to `\\frac`, `\\frac12` to `\\frac{1}{2}`, `a/b` to `\\frac{a}{b}`, `0.5` to
  `\\frac{1}{2}` and `.5` to `0.5`. As in PRM800K's grader (which DeepScaleR uses), `\\text{word}` wrappers are
  removed and plain-word answers are lowercased ("\\text{North}" == "north"). Two answers are equal under this
  opinion when the normalised strings are.
  """
  text = answer.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
  text = text.replace("tfrac", "frac").replace("dfrac", "frac")
  text = text.replace("\\left", "").replace("\\right", "")
  text = text.replace("^{\\circ}", "").replace("^\\circ", "")
  text = text.replace("\\$", "")
  if "\\text{ " in text:  # "\text{ " only ever introduces units in MATH answers: "5 \text{ cm}" -> "5"
    text = text.split("\\text{ ")[0]
  text = text.replace("\\%", "").replace("%", "")
  text = text.replace(" .", " 0.").replace("{.", "{0.")
  if not text:
    return text
  if text[0] == ".":
    text = "0" + text
  sides = text.split("=")
  if len(sides) == 2 and len(sides[0].strip()) <= 2:  # "k = 5" -> "5"
    text = sides[1]
  text = _fix_sqrt(text)
  text = text.replace(" ", "")
  text = _fix_fracs(text)
  if text == "0.5":
    text = "\\frac{1}{2}"
  text = _fix_a_slash_b(text)
  text = _TEXT_WRAPPER_RE.sub(r"\1", text)
  return text.lower() if re.fullmatch(r"[A-Za-z]+", text) else text


def score_math(response: str, ground_truth: str | int | float) -> float:
  """1.0 if the response's final answer equals `ground_truth` (Math-Verify or normalised string match), else 0.0.

  Args:
    response: decoded model output; only the text after the last `</think>` is graded.
    ground_truth: the reference answer: "\\frac{1}{2}", "0.5", "$x=3$", "\\boxed{3}", 7, ...

  Returns:
    1.0 or 0.0; 0.0 for an empty, malformed or truncated (unclosed `<think>`) response.

  Raises:
    ValueError: ground_truth is not a string/number or is empty (a dataset bug).
  """
  gold = _gold_text(ground_truth)
  pred = extraction.extract_math_answer(response)
  if not pred:
    return 0.0
  pred = _strip_math_delimiters(pred)
  try:
    if _math_verify_equal(gold, pred):
      return 1.0
  except Exception:  # noqa: BLE001 -- a verifier crash on model output is a wrong answer, never an error
    logging.getLogger(__name__).debug("math-verify failed on %r vs %r", pred, gold, exc_info=True)
  try:
    return float(normalize_answer(gold) == normalize_answer(pred))
  except Exception:  # noqa: BLE001
    return 0.0
