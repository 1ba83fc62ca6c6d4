"""Raw rows of a benchmark or training source: from the Hugging Face Hub, local files in the hub layout, or memory.

Local sources mirror what `datasets.load_dataset(...).to_json/to_parquet/save_to_disk` writes, plus CSV (the form
GPQA is distributed in): a `.jsonl`/`.json`/`.parquet`/`.csv` file, a directory of them (files whose path names
the split are preferred, as the hub lays files out), or a `save_to_disk` directory. Column helpers (`column`,
`first_column`) raise `DataError`s that name the dataset, the row, the missing column and the columns present.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prorl_jax.data.schema import DataError

_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
Row = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class HubLocation:
  """Where a dataset lives on the Hugging Face Hub.

  Attributes:
    path: the hub id, e.g. "HuggingFaceH4/aime_2024".
    configs: config (subset) names to read one after another; `(None,)` for the default config.
    split: the split to read.
    data_files: raw files inside the repository, read with the json/parquet builder instead of the dataset's own
      loader (LiveCodeBench ships a loading script that `datasets` no longer runs, but also plain jsonl files).
  """

  path: str
  configs: tuple[str | None, ...] = (None,)
  split: str = "train"
  data_files: tuple[str, ...] = ()

  def describe(self) -> str:
    configs = [c for c in self.configs if c]
    return self.path + (f" [{', '.join(configs)}]" if configs else "") + f" split={self.split!r}"


@dataclasses.dataclass(frozen=True)
class Where:
  """Names a dataset in error messages: "benchmark 'aime2024' (HuggingFaceH4/aime_2024)"."""

  kind: str
  name: str
  origin: str

  def row(self, index: int) -> str:
    return f"{self.kind} '{self.name}' ({self.origin}) row {index}"

  def __str__(self) -> str:
    return f"{self.kind} '{self.name}' ({self.origin})"


def column(row: Row, name: str, where: str, *, layout: str = "") -> Any:
  """`row[name]`; a DataError naming the row, the column and the columns present when it is missing or null."""
  if name not in row or row[name] is None:
    state = "is missing" if name not in row else "is null"
    raise DataError(name, f"{state}: the row has no value in column {name!r}",
                    f"columns present: {sorted(row)}" + (f"; expected the {layout} layout" if layout else ""),
                    where)
  return row[name]


def first_column(row: Row, names: Sequence[str], where: str, *, layout: str = "") -> tuple[str, Any]:
  """The first of `names` present (non-null) in `row`, as (name, value); DataError listing all candidates."""
  for name in names:
    if row.get(name) is not None:
      return name, row[name]
  others = f" (nor its alternatives {list(names[1:])})" if len(names) > 1 else ""
  raise DataError(names[0], f"is missing: the row has no value in column {names[0]!r}{others}",
                  f"columns present: {sorted(row)}" + (f"; expected the {layout} layout" if layout else ""), where)


def maybe_json(value: Any) -> Any:
  """Decodes JSON text (hub datasets often store dicts/lists as strings); other values pass through."""
  if isinstance(value, str) and value[:1] in "[{":
    try:
      return json.loads(value)
    except ValueError:
      return value
  return value


def json_lines(lines: Iterator[str], where: str) -> Iterator[dict[str, Any]]:
  """One JSON object per non-blank line; a bad line is a DataError naming its line and column."""
  for line_no, line in enumerate(lines, 1):
    if line.strip():
      try:
        yield json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError("<row>", f"is not valid JSON ({e.msg} at line {line_no}, column {e.colno})",
                        "each line must be one JSON object", where) from None


def _iter_jsonl(path: pathlib.Path) -> Iterator[dict[str, Any]]:
  with open(path, encoding="utf-8") as f:
    yield from json_lines(f, str(path))


def _iter_json(path: pathlib.Path) -> Iterator[dict[str, Any]]:
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    if e.msg == "Extra data":  # `Dataset.to_json("x.json")` writes JSON Lines under a .json name
      yield from _iter_jsonl(path)
      return
    raise DataError("<file>", f"is not valid JSON ({e.msg} at line {e.lineno})",
                    "use a JSON list of row objects, or .jsonl", str(path)) from None
  if isinstance(data, Mapping) and len(data) == 1 and isinstance(next(iter(data.values())), list):
    data = next(iter(data.values()))
  if not isinstance(data, list):
    raise DataError("<file>", "is not a JSON list of rows", "use [{...}, {...}] or .jsonl", str(path))
  yield from data


def _iter_parquet(path: pathlib.Path) -> Iterator[dict[str, Any]]:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  for batch in pq.ParquetFile(path).iter_batches(batch_size=512):
    yield from batch.to_pylist()


def _iter_csv(path: pathlib.Path) -> Iterator[dict[str, Any]]:
  with open(path, encoding="utf-8", newline="") as f:
    yield from csv.DictReader(f)


def _data_files(root: pathlib.Path, split: str) -> list[pathlib.Path]:
  files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _SUFFIXES and ".cache" not in p.parts)
  if not files:
    raise DataError("<source>", f"directory {str(root)!r} holds no {'/'.join(_SUFFIXES)} files",
                    "point at a data file or a directory of them")
  matching = [p for p in files if split in p.relative_to(root).parts[:-1] or p.name.startswith(split)]
  return matching or files


def iter_local(path: pathlib.Path, split: str) -> Iterator[dict[str, Any]]:
  """Rows of a local file or directory (see the module docstring)."""
  if path.is_dir():
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
      import datasets  # pylint: disable=g-import-not-at-top
      ds = datasets.load_from_disk(str(path))
      if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
          raise DataError("split", f"{split!r} is not in {str(path)!r}", f"use one of {sorted(ds)}")
        ds = ds[split]
      yield from ds
      return
    for p in _data_files(path, split):
      yield from iter_local(p, split)
    return
  readers = {".jsonl": _iter_jsonl, ".json": _iter_json, ".parquet": _iter_parquet, ".csv": _iter_csv}
  if path.suffix not in readers:
    raise DataError("<source>", f"{str(path)!r} has suffix {path.suffix!r}", f"use one of {_SUFFIXES}")
  yield from readers[path.suffix](path)


def iter_hub(hub: HubLocation, where: Where) -> Iterator[dict[str, Any]]:
  """Rows of every config of `hub`, in order, through `datasets.load_dataset`."""
  import datasets  # pylint: disable=g-import-not-at-top
  offline = any(os.environ.get(v, "") not in ("", "0") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
  for config in hub.configs:
    try:
      if hub.data_files:
        files = [f"hf://datasets/{hub.path}/{f}" for f in hub.data_files]
        builder = "parquet" if all(f.endswith(".parquet") for f in hub.data_files) else "json"
        ds = datasets.load_dataset(builder, data_files=files, split="train")
      else:
        ds = datasets.load_dataset(hub.path, config, split=hub.split)
    except Exception as e:  # Network, auth (GPQA is gated) and missing-dataset errors all end here.
      why = "offline mode is on (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE)" if offline else f"{type(e).__name__}: {e}"
      raise DataError(
          "<source>", f"{hub.describe()} could not be loaded from the Hugging Face Hub: {why}",
          "on a machine with access run datasets.load_dataset(...).to_json('x.jsonl') (or accept the dataset's "
          "terms and set HF_TOKEN for gated sets) and pass source='x.jsonl'", str(where)) from None
    yield from ds


def iter_rows(source: str | os.PathLike | Sequence[Row] | None, hub: HubLocation,
              where: Where) -> Iterator[dict[str, Any]]:
  """Rows from `source` (local path or in-memory rows) when given, else from the hub."""
  if source is None:
    yield from iter_hub(hub, where)
    return
  if isinstance(source, (str, os.PathLike)):
    path = pathlib.Path(source).expanduser()
    if not path.exists():
      raise DataError("<source>", f"{str(source)!r} does not exist",
                      f"pass a local file/directory in the {hub.path} layout, or source=None for the hub",
                      str(where))
    yield from iter_local(path, hub.split)
    return
  for row in source:
    yield row
