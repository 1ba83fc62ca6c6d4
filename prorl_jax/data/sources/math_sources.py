"""Math benchmarks (AIME 2024/2025, AMC, MATH-500, Minerva, OlympiadBench) and math/STEM training sources
(DeepScaleR-Preview, SCP-116K), as ProRL evaluates and trains on them (P1 §3.4, ALGORITHMS.md §12-§13).

Every converter yields domain "math" with the reference answer string Math-Verify grades. Layouts (checked against
the datasets' cards and code that reads them):
  HuggingFaceH4/aime_2024        train: id, problem, solution, answer (str), url, year
  opencompass/AIME2025           configs AIME2025-I, AIME2025-II, test: question, answer
  AI-MO/aimo-validation-amc      train: id, problem, answer (float64, e.g. 142.0), url
  HuggingFaceH4/MATH-500         test: problem, solution, answer, subject, level, unique_id
  math-ai/minervamath            test: question, answer
  Hothan/OlympiadBench           config OE_TO_maths_en_COMP, train: id, question, solution (list), final_answer
                                 (list), context, is_multiple_answer, unit, answer_type, ...
  agentica-org/DeepScaleR-Preview-Dataset  train: problem, answer, solution
  EricLu/SCP-116K                train: domain, problem, matched_solution, {o1,qwq,...}_solution,
                                 is_{o1,qwq,...}_solution_same_with_matched_solution
Mirrors that name the problem "problem" or "question" and the answer "answer" or "final_answer" load too
(yentinglin/aime_2025, math-ai/aime25, knoveleng/Minerva-Math, math-ai/olympiadbench); a row with no answer column
but a `\\boxed{}` in its "solution" uses that boxed answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from prorl_jax.data.schema import Example
from prorl_jax.data.sources._rows import HubLocation, Row, first_column
from prorl_jax.data.sources.registry import Context, SourceSpec
from prorl_jax.rewards import extraction

_PROMPTS = ("problem", "question", "Problem", "Question")
_ANSWERS = ("answer", "final_answer", "Answer")
_IDS = ("id", "unique_id", "ID", "idx")
_EXTRA = ("year", "url", "subject", "level", "type", "answer_type", "unit", "subfield", "difficulty", "source")
_DELIMITED = re.compile(r"^\s*(\$\$|\$|\\\(|\\\[)(.*?)(\$\$|\$|\\\)|\\\])\s*$", re.DOTALL)


def _strip_delimiters(text: str) -> str:
  match = _DELIMITED.match(text)
  return match.group(2).strip() if match else text.strip()


def answer_text(value: Any, ctx: Context, column: str) -> str:
  """A dataset answer as the string Math-Verify grades: 142.0 -> "142", ["$1$", "$2$"] -> "1, 2"."""
  if isinstance(value, bool):
    raise ctx.error(column, f"is a bool ({value!r}), not an answer", "fix the dataset's answer column")
  if isinstance(value, float):
    return str(int(value)) if value.is_integer() else repr(value)
  if isinstance(value, int):
    return str(value)
  if isinstance(value, str):
    return value.strip()
  if isinstance(value, Sequence) and value and all(isinstance(v, (str, int, float)) for v in value):
    parts = [_strip_delimiters(answer_text(v, ctx, column)) for v in value]
    return ", ".join(p for p in parts if p)
  raise ctx.error(column, f"has type {type(value).__name__} ({value!r:.80})", "expected a string or a number")


def _reference_answer(row: Row, ctx: Context, layout: str) -> tuple[str, str]:
  """(answer, where it came from): the answer column, else the last \\boxed{} of the solution."""
  for name in _ANSWERS:
    if row.get(name) is not None:
      return answer_text(row[name], ctx, name), name
  solution = row.get("solution")
  if isinstance(solution, list):
    solution = "\n".join(map(str, solution))
  boxed = extraction.last_boxed(solution) if isinstance(solution, str) else None
  if boxed:
    return boxed.strip(), "solution_boxed"
  first_column(row, _ANSWERS, ctx.where, layout=layout)  # raises, naming the columns
  raise AssertionError("unreachable")


def _row_id(row: Row, ctx: Context) -> str:
  for name in _IDS:
    if row.get(name) is not None and str(row[name]).strip():
      return str(row[name]).strip()
  return str(ctx.index)


def convert_competition(row: Row, ctx: Context) -> Example:
  """problem/question + answer -> a math Example (AIME, AMC, MATH-500, Minerva, OlympiadBench, DeepScaleR)."""
  layout = "problem/question + answer"
  prompt_col, prompt = first_column(row, _PROMPTS, ctx.where, layout=layout)
  if isinstance(row.get("context"), str) and row["context"].strip():  # OlympiadBench's shared problem context
    prompt = row["context"].strip() + "\n\n" + prompt
  answer, answer_col = _reference_answer(row, ctx, layout)
  if not answer:
    raise ctx.error(answer_col, "is empty", "every problem needs a reference answer")
  extra = {k: row[k] for k in _EXTRA if row.get(k) not in (None, "", [])}
  if row.get("is_multiple_answer"):
    extra["multiple_answers"] = True
  if answer_col == "solution_boxed":
    extra["answer_from"] = "solution_boxed"
  return ctx.example(id=_row_id(row, ctx), domain="math", prompt=str(prompt).strip(), ground_truth=answer,
                     extra=extra)


# ---- SCP-116K ---------------------------------------------------------------------------------------------

_JUDGED = re.compile(r"^is_(\w+?)_solution_same_with_matched_solution$")


def scp_answer(row: Row, prefer: Sequence[str]) -> tuple[str, str] | None:
  """The reference answer of an SCP-116K row, or None when it has no retrievable one.

  ProRL (P1 §3.1) keeps problems whose ground truth is retrievable and for which GPT-4o judged a model's solution
  consistent with the matched (textbook) solution. The answer is the last `\\boxed{}` of the matched solution,
  else of a model solution judged consistent (models in `prefer` order, then the rest).
  """
  judged = {m.group(1): bool(v) for k, v in row.items() if (m := _JUDGED.match(k)) and v is not None}
  consistent = [m for m in prefer if judged.get(m)] + sorted(m for m, ok in judged.items() if ok and m not in prefer)
  if not consistent:
    return None
  for column in ["matched_solution"] + [f"{m}_solution" for m in consistent]:
    text = row.get(column)
    boxed = extraction.last_boxed(text) if isinstance(text, str) else None
    if boxed and boxed.strip():
      return boxed.strip(), column
  return None


def convert_scp(row: Row, ctx: Context) -> Example | None:
  """SCP-116K row -> math Example with the boxed answer of a judged-consistent solution; None if it has none."""
  _, problem = first_column(row, ("problem",), ctx.where, layout="EricLu/SCP-116K")
  found = scp_answer(row, ctx.options["prefer"])
  if found is None:
    return None
  answer, column = found
  extra = {"prorl_domain": "stem", "answer_from": column}
  if row.get("domain"):
    extra["subject"] = row["domain"]
  return ctx.example(id=str(row.get("id", ctx.index)), domain="math", prompt=str(problem).strip(),
                     ground_truth=answer, extra=extra)


def _bench(name: str, hub: HubLocation, description: str) -> SourceSpec:
  return SourceSpec(name=name, kind="benchmark", domain="math", hub=hub, convert=convert_competition,
                    layout="problem|question, answer|final_answer", description=description)


MATH_BENCHMARKS: Mapping[str, SourceSpec] = {s.name: s for s in (
    _bench("aime2024", HubLocation("HuggingFaceH4/aime_2024", split="train"), "AIME 2024 I+II, 30 problems"),
    _bench("aime2025", HubLocation("opencompass/AIME2025", configs=("AIME2025-I", "AIME2025-II"), split="test"),
           "AIME 2025 I+II, 30 problems"),
    _bench("amc", HubLocation("AI-MO/aimo-validation-amc", split="train"), "AMC12 2022+2023, 83 problems"),
    _bench("math500", HubLocation("HuggingFaceH4/MATH-500", split="test"), "MATH-500 (PRM800K test subset)"),
    _bench("minerva", HubLocation("math-ai/minervamath", split="test"), "Minerva Math, 272 problems"),
    _bench("olympiadbench", HubLocation("Hothan/OlympiadBench", configs=("OE_TO_maths_en_COMP",), split="train"),
           "OlympiadBench, open-ended text-only English competition math, 674 problems"),
)}

MATH_TRAINING: Mapping[str, SourceSpec] = {s.name: s for s in (
    SourceSpec(name="deepscaler", kind="training", domain="math",
               hub=HubLocation("agentica-org/DeepScaleR-Preview-Dataset", split="train"),
               convert=convert_competition, layout="problem, answer",
               description="DeepScaleR-Preview, 40.3k competition math problems (ProRL's math domain)"),
    SourceSpec(name="scp116k", kind="training", domain="math", hub=HubLocation("EricLu/SCP-116K", split="train"),
               convert=convert_scp, layout="problem, matched_solution, is_*_solution_same_with_matched_solution",
               description="SCP-116K science problems with a retrievable boxed answer (ProRL's STEM domain)",
               defaults={"prefer": ("r1", "o1", "qwq")}),
)}
