"""GPQA-Diamond as a four-option multiple-choice benchmark (ProRL's STEM evaluation, P1 §4).

Layouts:
  Idavidrein/gpqa, config gpqa_diamond, split train (gated; also the gpqa_diamond.csv of the original release):
    "Question", "Correct Answer", "Incorrect Answer 1".."3", "Record ID", "Subdomain", "High-level domain", ...
  spawn99/GPQA-diamond-ClaudeR1, split train (the subset ProRL evaluates on):
    record_id, question, correct_answer, correct_explanation, model_responses, metadata
The spawn99 rows carry no wrong options, so `gpqa_diamond_prorl` takes the options from the Idavidrein rows with
the same record id (`options_source`, default the hub; a local file in that layout works too).

The options are shuffled into letters A-D with a generator seeded by the record id (the question text when a row
has none), so every load gives every question the same order, and the two benchmarks agree on shared questions.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Mapping
from typing import Any

from prorl_jax.data.schema import DataError, Example
from prorl_jax.data.sources._rows import HubLocation, Row, Where, column, iter_rows
from prorl_jax.data.sources.registry import Context, SourceSpec

LETTERS = "ABCD"
_LAYOUT = "Idavidrein/gpqa (Question, Correct Answer, Incorrect Answer 1-3)"
_GPQA_HUB = HubLocation("Idavidrein/gpqa", configs=("gpqa_diamond",), split="train")


def shuffle_seed(key: str) -> int:
  """A 64-bit seed derived from the question's key alone (stable across runs and machines)."""
  return int.from_bytes(hashlib.blake2b(f"gpqa-options\0{key}".encode(), digest_size=8).digest(), "big")


def shuffled_options(correct: str, incorrect: list[str], key: str) -> tuple[list[str], str]:
  """(options in display order, the correct letter): a deterministic permutation seeded by `key`."""
  options = [correct] + list(incorrect)
  order = list(range(len(options)))
  random.Random(shuffle_seed(key)).shuffle(order)
  return [options[i] for i in order], LETTERS[order.index(0)]


def format_question(question: str, options: list[str]) -> str:
  lines = [f"{letter}) {text}" for letter, text in zip(LETTERS, options)]
  return question.strip() + "\n\n" + "\n".join(lines)


def _options(row: Row, where: str) -> tuple[str, list[str]]:
  correct = str(column(row, "Correct Answer", where, layout=_LAYOUT)).strip()
  incorrect = [str(column(row, f"Incorrect Answer {i}", where, layout=_LAYOUT)).strip() for i in (1, 2, 3)]
  if len({correct, *incorrect}) != 4:
    raise DataError("Incorrect Answer 1-3", "repeat an option", "GPQA options must be four distinct texts", where)
  return correct, incorrect


def _choice_example(ctx: Context, record_id: str, question: str, correct: str, incorrect: list[str],
                    extra: Mapping[str, Any]) -> Example:
  options, letter = shuffled_options(correct, incorrect, record_id or question)
  return ctx.example(id=record_id or str(ctx.index), domain="stem", prompt=format_question(question, options),
                     ground_truth=letter, extra={**extra, "options": options, "correct_letter": letter})


def convert_gpqa(row: Row, ctx: Context) -> Example:
  """Idavidrein/gpqa row -> stem Example whose ground truth is the letter of the correct option."""
  question = str(column(row, "Question", ctx.where, layout=_LAYOUT))
  correct, incorrect = _options(row, ctx.where)
  record_id = str(row.get("Record ID") or "").strip()
  extra = {k: row[k] for k in ("Subdomain", "High-level domain") if row.get(k)}
  return _choice_example(ctx, record_id, question, correct, incorrect, extra)


def _joined_rows(source: Any, hub: HubLocation, where: Where, options: Mapping[str, Any]) -> Iterator[Row]:
  """spawn99 rows with the options of the Idavidrein row of the same record id merged in."""
  gpqa_where = Where(where.kind, where.name + " options", str(options["options_source"] or _GPQA_HUB.path))
  by_id: dict[str, Row] = {}
  for index, row in enumerate(iter_rows(options["options_source"], _GPQA_HUB, gpqa_where)):
    record_id = str(column(row, "Record ID", gpqa_where.row(index), layout=_LAYOUT)).strip()
    by_id[record_id] = row
  for index, row in enumerate(iter_rows(source, hub, where)):
    record_id = str(column(row, "record_id", where.row(index), layout="spawn99/GPQA-diamond-ClaudeR1")).strip()
    if record_id not in by_id:
      raise DataError("record_id", f"{record_id!r} is not among the {len(by_id)} rows of {gpqa_where.origin}",
                      "pass options_source= the gpqa_diamond data (Idavidrein/gpqa) that holds this record",
                      where.row(index))
    yield {**by_id[record_id], **row}


def convert_gpqa_prorl(row: Row, ctx: Context) -> Example:
  """A spawn99 row joined with its Idavidrein options -> stem Example."""
  question = str(column(row, "question", ctx.where, layout="spawn99/GPQA-diamond-ClaudeR1"))
  correct, incorrect = _options(row, ctx.where)
  given = str(row.get("correct_answer", correct)).strip()
  if given != correct:
    raise ctx.error("correct_answer", f"{given[:60]!r} differs from the options' correct answer {correct[:60]!r}",
                    "options_source must be the GPQA release the subset was drawn from")
  extra = {k: row[k] for k in ("Subdomain", "High-level domain") if row.get(k)}
  return _choice_example(ctx, str(row["record_id"]).strip(), question, correct, incorrect, extra)


CHOICE_BENCHMARKS: Mapping[str, SourceSpec] = {s.name: s for s in (
    SourceSpec(name="gpqa_diamond", kind="benchmark", domain="stem", hub=_GPQA_HUB, convert=convert_gpqa,
               layout=_LAYOUT, description="GPQA-Diamond, 198 questions, options shuffled per question into A-D"),
    SourceSpec(name="gpqa_diamond_prorl", kind="benchmark", domain="stem",
               hub=HubLocation("spawn99/GPQA-diamond-ClaudeR1", split="train"), convert=convert_gpqa_prorl,
               layout="spawn99 (record_id, question, correct_answer) + Idavidrein options",
               description="ProRL's GPQA-Diamond subset (spawn99/GPQA-diamond-ClaudeR1) as multiple choice",
               defaults={"options_source": None}, rows=_joined_rows),
)}
