"""Final-answer extraction shared by the math, STEM, logic and IFEval verifiers (ALGORITHMS.md §12).

ProRL grades only what a reasoning model says after it stops thinking, so every verifier starts from
`final_text`: the text after the last `</think>`; `None` (score 0) when a `<think>` was opened and never closed
(the response was cut off mid-reasoning); the whole response when it has no think tags at all (a model whose
chat template opens `<think>` inside the prompt emits only the closing tag, which is handled the same way).

From that text:
  * `last_boxed` / `all_boxed`: `\\boxed{...}` and `\\fbox{...}` with nested braces (and `\\boxed 5`);
  * `answer_tag`: the last `<answer>...</answer>` (as `reasoning_gym.utils.extract_answer`, in linear time);
  * `answer_is_fallback`: "The (final) answer is X" / "Final answer: X";
  * `extract_math_answer`: boxed, else `<answer>`, else the "answer is" fallback;
  * `choice_claims` / `extract_choice`: multiple-choice letters; several different letters claimed -> None.

Pure string functions: no imports beyond `re`, so worker processes start fast.
"""

from __future__ import annotations

import functools
import re

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"
_BOX_COMMANDS = ("\\boxed", "\\fbox")
# Options A-J cover MMLU-Pro's ten choices; GPQA and SCP-style four-option items are a subset.
DEFAULT_CHOICES = "ABCDEFGHIJ"


def final_text(response: str) -> str | None:
  """The gradable part of a response: after the last `</think>`; None if a `<think>` is left unclosed.

  Args:
    response: the decoded model output (any string; non-strings give None).

  Returns:
    The text after the last `</think>` (whole response if it has no think tags), or None when the response
    opens `<think>` without closing it afterwards (truncated reasoning, which ProRL never grades).
  """
  if not isinstance(response, str):
    return None
  head, sep, tail = response.rpartition(_THINK_CLOSE)
  text = tail if sep else response
  if _THINK_OPEN in text:
    return None
  return text


# One pass over box openers, braces and escaped braces, so a degenerate output full of unclosed `\\boxed{`
# (RL policies do produce these) costs linear, not quadratic, time.
_BOX_TOKEN_RE = re.compile(r"\\(?:boxed|fbox)\s*\{|\\boxed +(?P<bare>[^\s{$][^\s$]*)|\\[{}]|[{}]")


def _boxed_spans(text: str) -> list[tuple[int, str]]:
  """(start, content) of every `\\boxed{...}`/`\\fbox{...}` (brace-balanced) and `\\boxed X`, in text order."""
  found: list[tuple[int, str]] = []
  stack: list[tuple[int, int] | None] = []  # (command start, content start) for box openers, None for a `{`
  for match in _BOX_TOKEN_RE.finditer(text):
    token = match.group()
    if match.group("bare") is not None:  # `\\boxed 5` (seen in MATH solutions): one token
      found.append((match.start(), match.group("bare")))
    elif token.endswith("{") and token.startswith("\\") and len(token) > 2:
      stack.append((match.start(), match.end()))
    elif token == "{":
      stack.append(None)
    elif token == "}" and stack:
      opener = stack.pop()
      if opener is not None:
        found.append((opener[0], text[opener[1]:match.start()]))
    # Escaped braces (`\\{1, 2\\}`) are literal set braces and an unmatched `}` is noise: both ignored.
  return sorted(found)


def all_boxed(text: str) -> list[str]:
  """Every boxed answer in `text`, in order: contents of `\\boxed{}`/`\\fbox{}` with nested braces."""
  if not isinstance(text, str):
    return []
  return [content for _, content in _boxed_spans(text)]


def last_boxed(text: str) -> str | None:
  """Content of the last `\\boxed{...}` / `\\fbox{...}` / `\\boxed X` in `text`, or None.

  Nested braces are kept (`\\boxed{\\frac{1}{2}}` -> `\\frac{1}{2}`), as in the MATH/DeepScaleR
  `last_boxed_only_string`; when the last box is unbalanced (truncated output) the answer is None, not an
  earlier box.
  """
  if not isinstance(text, str):
    return None
  last_start = max(text.rfind(c) for c in _BOX_COMMANDS)
  if last_start < 0:
    return None
  spans = _boxed_spans(text)
  if not spans or spans[-1][0] != last_start:
    return None
  return spans[-1][1].strip()


_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"


def _answer_tag_span(text: str) -> tuple[int, str] | None:
  last_close = text.rfind(_ANSWER_CLOSE)
  start = text.rfind(_ANSWER_OPEN, 0, last_close) if last_close >= 0 else -1
  if start < 0:
    return None
  # The first close after that opener: stray closing tags later on are not part of the answer.
  end = text.find(_ANSWER_CLOSE, start + len(_ANSWER_OPEN))
  return start, text[start + len(_ANSWER_OPEN):end].strip()


def answer_tag(text: str) -> str | None:
  """Stripped content of the last `<answer>...</answer>` in `text` (ProRL's logic format), or None.

  Agrees with `reasoning_gym.utils.extract_answer` on well-formed text; with nested or stray tags it takes the
  last `<answer>` before the last `</answer>`, and it runs in linear time (the regex is quadratic on a
  degenerate output of many unclosed tags).
  """
  if not isinstance(text, str):
    return None
  span = _answer_tag_span(text)
  return span[1] if span else None


_ANSWER_IS_RE = re.compile(r"\banswer\s*(?:is\s*:?|:)\s*(?P<ans>[^\n]+)", flags=re.IGNORECASE)


def _clean_inline_answer(answer: str) -> str:
  answer = answer.strip()
  # Cut at the end of the sentence: a period followed by whitespace ("42. Let me check" -> "42").
  answer = re.split(r"\.\s", answer, maxsplit=1)[0]
  answer = answer.strip().strip("*").strip()
  if answer.startswith("$") and answer.count("$") >= 2:
    answer = answer[1:answer.index("$", 1)]
  elif answer.startswith("\\(") and "\\)" in answer:
    answer = answer[2:answer.index("\\)")]
  elif answer.startswith("\\[") and "\\]" in answer:
    answer = answer[2:answer.index("\\]")]
  return answer.strip().rstrip(".").strip()


def answer_is_fallback(text: str) -> str | None:
  """The last "the answer is X" / "final answer: X" in `text`, cleaned of `$`, `**` and a closing period.

  Used only when there is no boxed answer: `"... so the final answer is $\\frac{1}{2}$."` -> `\\frac{1}{2}`.
  """
  if not isinstance(text, str):
    return None
  matches = list(_ANSWER_IS_RE.finditer(text))
  for match in reversed(matches):
    answer = _clean_inline_answer(match.group("ans"))
    if answer:
      return answer
  return None


def extract_math_answer(response: str) -> str | None:
  """Final answer of a math response: last `\\boxed{}`, else last `<answer>`, else "answer is" fallback.

  Only the text after `</think>` is searched (see `final_text`); None when nothing is found.
  """
  text = final_text(response)
  if text is None:
    return None
  for extractor in (last_boxed, answer_tag, answer_is_fallback):
    answer = extractor(text)
    if answer:
      return answer
  return None


_LATEX_WRAPPER_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textrm|mbox|operatorname)\s*\{([^{}]*)\}")


def _check_choices(choices: str) -> None:
  if not isinstance(choices, str) or not re.fullmatch(r"[A-Z]+", choices) or len(set(choices)) != len(choices):
    raise ValueError(f"choices must be distinct uppercase letters such as 'ABCD', got {choices!r}")


def _letter_of(content: str, choices: str) -> str | None:
  """The option letter (either case) that a boxed/tagged answer names: `(C)`, `c`, `C.`, `\\text{C}`, `C) 42`."""
  content = _LATEX_WRAPPER_RE.sub(r"\1", content)
  content = content.replace("$", "").replace("*", "").strip()
  letters = choices + choices.lower()
  match = re.fullmatch(rf"\(?([{letters}])\)?(?:[.:)]\s*.*)?", content, flags=re.DOTALL)
  return match.group(1).upper() if match else None


@functools.lru_cache(maxsize=16)
def _phrase_re(choices: str) -> re.Pattern[str]:
  return re.compile(
      r"(?i:\b(?:final|correct|right|best)\s+(?:answer|option|choice)\s*(?:is\s*:?|:)?|\banswer\s*(?:is\s*:?|:))"
      r"\s*(?i:(?:option|choice)\s+)?[*(\[\s$]*"
      rf"(?P<letter>[{choices}])"
      r"[*)\]$]*(?=$|[.,;:!?\n]|\s)")


_PRONOUN_I_RE = re.compile(r"[*)\]$]*\s+\w")


def choice_claims(text: str, choices: str = DEFAULT_CHOICES) -> list[str]:
  """Every option letter that `text` declares as its answer, in order of appearance (duplicates kept).

  Declarations: boxed letters (`\\boxed{C}`, `\\boxed{(c)}`, `\\boxed{\\text{C}}`), `<answer>C</answer>`,
  phrases ("Answer: C", "The answer is (C)", "the correct option is **C**", "Final answer: C"), and a last line
  that is only a letter ("**C**", "(C)"). "answer" needs "is" or ":" after it and a bare "option A" is not a
  claim, so discussing options ("Option A is wrong") is not read as answering. Phrase letters must be uppercase
  and stand alone (followed by punctuation, whitespace or the end); "I" must be followed by punctuation or the
  end so the pronoun ("the answer is I think ...") is not read as option I.

  Args:
    text: already reduced by `final_text`.
    choices: the allowed option letters, uppercase, e.g. "ABCD" or "ABCDEFGHIJ".
  """
  _check_choices(choices)
  if not isinstance(text, str):
    return []
  claims: list[tuple[int, str]] = []
  for start, content in _boxed_spans(text):
    letter = _letter_of(content, choices)
    if letter:
      claims.append((start, letter))
  tag = _answer_tag_span(text)
  if tag is not None:
    letter = _letter_of(tag[1], choices)
    if letter:
      claims.append((tag[0], letter))
  for match in _phrase_re(choices).finditer(text):
    letter = match.group("letter")
    if letter == "I" and _PRONOUN_I_RE.match(text, match.end("letter")):
      continue
    claims.append((match.start("letter"), letter))
  lines = [line for line in text.strip().splitlines() if line.strip()]
  if lines:
    bare = re.sub(r"[*#$\s]", "", lines[-1])
    bare = re.sub(r"^(?i:(?:final)?answer):?", "", bare)
    match = re.fullmatch(rf"\(?([{choices}])\)?\.?", bare)
    if match:
      claims.append((len(text), match.group(1)))
  return [letter for _, letter in sorted(claims, key=lambda c: c[0])]


def extract_choice(response: str, choices: str = DEFAULT_CHOICES) -> str | None:
  """The single option letter a response commits to, or None if it names none or several different ones.

  Only the text after `</think>` is read (see `final_text`).
  """
  _check_choices(choices)
  text = final_text(response)
  if text is None:
    return None
  letters = set(choice_claims(text, choices))
  return letters.pop() if len(letters) == 1 else None
