"""Continuous logic reward from Reasoning Gym's own verifiers (ALGORITHMS.md §12, ProRL's 96 logic tasks).

The answer is the content of the last `<answer>...</answer>` after `</think>` (ProRL's format; a response that
never closes `<think>` scores 0) and is scored by the task's `score_answer(answer, entry)`, a float in [0, 1]
(several tasks give partial credit, e.g. 0.01 for a well-formed wrong countdown expression).

Ground truth: `{"task": name, "entry": entry, "config": {...}}` (config optional), where `entry` is what
`reasoning_gym.create_dataset(name, **config)` produced, or the JSON string of that dict after a round trip
through a dataset file. JSON turns tuples into lists, which breaks the scorers that compare with tuple metadata
(`arc_agi`, `rearc` compare parsed grids with `metadata["output"]`); `_restore_tuples` converts those fields
back. The scorer object (a dataset instance; constructing one can take a second) is cached per (task, config).

Reasoning Gym is imported lazily, on the first call, so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from typing import Any, Callable

from prorl_jax.rewards import extraction

__all__ = ["parse_logic_ground_truth", "score_logic"]

# Metadata fields whose scorers compare with tuples (grids as tuples of tuples) that JSON turns into lists.
_TUPLE_FIELDS: dict[str, tuple[str, ...]] = {
    "arc_agi": ("input", "output"),
    "rearc": ("input", "output"),
}


def _to_tuples(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return tuple(_to_tuples(v) for v in value)
  return value


def _restore_tuples(task: str, entry: dict[str, Any]) -> dict[str, Any]:
  fields = _TUPLE_FIELDS.get(task)
  metadata = entry.get("metadata")
  if not fields or not isinstance(metadata, dict):
    return entry
  metadata = dict(metadata)
  for field in fields:
    if field in metadata:
      metadata[field] = _to_tuples(metadata[field])
  return {**entry, "metadata": metadata}


def parse_logic_ground_truth(ground_truth: dict[str, Any] | str) -> tuple[str, dict[str, Any], dict[str, Any]]:
  """Validates a logic ground truth; returns (task name, entry ready for `score_answer`, dataset config).

  Raises:
    ValueError: not a dict / JSON object, unknown `task`, `entry` not a dict, `config` not a dict.
  """
  if isinstance(ground_truth, str):
    try:
      ground_truth = json.loads(ground_truth)
    except json.JSONDecodeError as e:
      raise ValueError(f"logic ground_truth is a string but not valid JSON ({e}); expected "
                       '{"task": name, "entry": entry}') from e
  if not isinstance(ground_truth, dict):
    raise ValueError(f'logic ground_truth must be a dict {{"task": name, "entry": entry}} (or its JSON), got '
                     f"{type(ground_truth).__name__}")
  task = ground_truth.get("task")
  entry = ground_truth.get("entry")
  config = ground_truth.get("config") or {}
  if isinstance(entry, str):  # the entry alone may have been serialised
    try:
      entry = json.loads(entry)
    except json.JSONDecodeError as e:
      raise ValueError(f"logic ground_truth field 'entry' is a string but not valid JSON ({e})") from e
  if not isinstance(task, str) or not task:
    raise ValueError(f"logic ground_truth field 'task' must be a Reasoning Gym task name, got {task!r}")
  if not isinstance(entry, dict):
    raise ValueError(f"logic ground_truth field 'entry' must be the dict reasoning_gym.create_dataset({task!r}) "
                     f"produced (with 'question', 'answer', 'metadata'), got {type(entry).__name__}")
  missing = [key for key in ("answer", "metadata") if key not in entry]
  if missing:
    raise ValueError(f"logic ground_truth field 'entry' lacks {missing}: pass the whole dict that "
                     f"reasoning_gym.create_dataset({task!r}) produced")
  if not isinstance(config, dict):
    raise ValueError(f"logic ground_truth field 'config' must be a dict of dataset options, got "
                     f"{type(config).__name__}")
  _check_task(task)
  return task, _restore_tuples(task, entry), config


@functools.lru_cache(maxsize=1)
def _registered_tasks() -> frozenset[str]:
  from reasoning_gym.factory import DATASETS  # noqa: PLC0415 -- 2 s import, only when logic is scored
  return frozenset(DATASETS)


def _check_task(task: str) -> None:
  if task not in _registered_tasks():
    raise ValueError(f"logic ground_truth field 'task' names no Reasoning Gym task: {task!r} "
                     f"({len(_registered_tasks())} are registered in reasoning_gym.factory.DATASETS)")


@functools.lru_cache(maxsize=256)
def _scorer(task: str, config_json: str) -> Callable[..., float]:
  """`score_answer` of a dataset instance built once per (task, config): construction can take ~1 s."""
  from reasoning_gym.factory import DATASETS  # noqa: PLC0415
  dataset_cls, config_cls = DATASETS[task]
  try:
    config = config_cls(**json.loads(config_json))
  except TypeError as e:
    raise ValueError(f"logic ground_truth field 'config' does not fit {config_cls.__name__} of task {task!r}: "
                     f"{e}") from e
  return dataset_cls(config=config).score_answer


def score_logic(response: str, ground_truth: dict[str, Any] | str) -> float:
  """Reasoning Gym score in [0, 1] of the last `<answer>` of `response` for the given task entry.

  Args:
    response: decoded model output; only the text after the last `</think>` is read.
    ground_truth: `{"task": name, "entry": entry, "config": optional dataset options}` or its JSON string.

  Returns:
    The task's `score_answer` value clipped to [0, 1]; 0.0 for a missing `<answer>`, an empty, malformed or
    truncated response, or a scorer that raises on the answer.

  Raises:
    ValueError: malformed ground truth (see `parse_logic_ground_truth`).
  """
  task, entry, config = parse_logic_ground_truth(ground_truth)
  try:
    config_json = json.dumps(config, sort_keys=True)
  except TypeError as e:
    raise ValueError(f"logic ground_truth field 'config' is not JSON-serialisable: {e}") from e
  scorer = _scorer(task, config_json)
  text = extraction.final_text(response)
  if text is None:
    return 0.0
  answer = extraction.answer_tag(text)
  if answer is None:
    return 0.0
  try:
    value = float(scorer(answer=answer, entry=entry))
  except Exception:  # noqa: BLE001 -- some scorers raise on unparsable answers (e.g. prime_factorization)
    logging.getLogger(__name__).debug("%s scorer raised on %r", task, answer, exc_info=True)
    return 0.0
  if math.isnan(value):
    return 0.0
  return min(1.0, max(0.0, value))
