"""The benchmarks ProRL reports and the datasets it trains on, each mapped onto our `Example` schema.

  examples = load_benchmark("aime2024")                          # from the Hugging Face Hub
  examples = load_benchmark("aime2024", source="aime24.parquet")  # a local copy in the hub layout
  train = load_training_source("deepscaler", limit=1000)

Benchmarks (ALGORITHMS.md §13): aime2024, aime2025, amc, math500, minerva, olympiadbench (math); humaneval_plus,
livecodebench, prime_code_val (code), and besides ProRL's, humaneval (the original asserts), mbpp, mbpp_sanitized
(code, test programs); gpqa_diamond, gpqa_diamond_prorl (STEM, multiple choice); ifeval; reasoning_gym,
reasoning_gym_ood (held-out logic). Training sources (§12): deepscaler, eurus2_code, scp116k, reasoning_gym,
ifeval_train, and humaneval, mbpp, mbpp_sanitized (`split=` for MBPP's). Every Example's `extra["benchmark"]` (or
`extra["source"]`) names its dataset and its id is "<name>/<the dataset's own id>". Layouts and what each converter
does are documented in its module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from prorl_jax.data.schema import Example
from prorl_jax.data.sources._rows import HubLocation
from prorl_jax.data.sources.choice_sources import CHOICE_BENCHMARKS
from prorl_jax.data.sources.code_sources import CODE_BENCHMARKS, CODE_TRAINING
from prorl_jax.data.sources.instruction_sources import INSTRUCTION_BENCHMARKS, INSTRUCTION_TRAINING
from prorl_jax.data.sources.logic_sources import LOGIC_BENCHMARKS, LOGIC_TRAINING, OOD_TASKS, heldout_seed
from prorl_jax.data.sources.math_sources import MATH_BENCHMARKS, MATH_TRAINING
from prorl_jax.data.sources.registry import BenchmarkSpec, Context, SourceSpec, _resolve, load_source

BENCHMARKS: dict[str, SourceSpec] = {**MATH_BENCHMARKS, **CODE_BENCHMARKS, **CHOICE_BENCHMARKS,
                                     **INSTRUCTION_BENCHMARKS, **LOGIC_BENCHMARKS}
TRAINING_SOURCES: dict[str, SourceSpec] = {**MATH_TRAINING, **CODE_TRAINING, **INSTRUCTION_TRAINING,
                                           **LOGIC_TRAINING}
# The benchmarks of ProRL's evaluation tables (P1 Tables 1-3), in their order.
PRORL_BENCHMARKS = ("aime2024", "aime2025", "amc", "math500", "minerva", "olympiadbench", "prime_code_val",
                    "humaneval_plus", "livecodebench", "gpqa_diamond_prorl", "ifeval", "reasoning_gym")

Source = str | os.PathLike | Sequence[Mapping[str, Any]] | None


def load_benchmark(name: str, *, source: Source = None, limit: int | None = None, **options: Any) -> list[Example]:
  """Loads benchmark `name` as `Example`s with `extra["benchmark"] == name`.

  Args:
    name: a key of `BENCHMARKS`.
    source: None for the hub dataset in `BENCHMARKS[name].hub`; else a local `.jsonl`/`.jsonl.gz`/`.json`/
      `.parquet`/`.csv` file, a directory of them or a `save_to_disk` directory, in the hub dataset's layout; or
      rows in memory.
    limit: at most this many examples (the first ones).
    **options: the benchmark's options (`BENCHMARKS[name].defaults`), e.g. `version="release_v5"` for
      livecodebench, `max_tests=100` for humaneval_plus, `challenge_tests=True` for mbpp, `tasks=(...)` for
      reasoning_gym.

  Raises:
    ValueError: unknown benchmark or option.
    DataError: a row lacks a column or holds a malformed value; the message names the benchmark, its source, the
      row and the column, e.g. "benchmark 'aime2024' (HuggingFaceH4/aime_2024) row 3: field 'answer' is missing: the
      row has no value in column 'answer' (columns present: [...])".
  """
  spec, _ = _resolve(BENCHMARKS, "benchmark", name, options)
  return load_source(spec, source=source, limit=limit, **options)


def load_training_source(name: str, *, source: Source = None, limit: int | None = None, skip_invalid: bool = False,
                         **options: Any) -> list[Example]:
  """Loads training source `name` (a key of `TRAINING_SOURCES`); arguments as `load_benchmark`.

  Sources with a filter (scp116k: rows without a retrievable answer; eurus2_code: non-code rows; ifeval_train:
  unknown instruction ids) drop those rows and log how many. A malformed row raises `DataError` unless
  `skip_invalid=True`, which drops it (logged) and makes repeated ids unique with a "#row<i>" suffix.
  """
  spec, _ = _resolve(TRAINING_SOURCES, "training source", name, options)
  return load_source(spec, source=source, limit=limit, skip_invalid=skip_invalid, **options)


__all__ = ["BENCHMARKS", "BenchmarkSpec", "Context", "HubLocation", "OOD_TASKS", "PRORL_BENCHMARKS",
           "SourceSpec", "TRAINING_SOURCES", "heldout_seed", "load_benchmark", "load_source", "load_training_source"]
