"""Resumable per-problem evaluation results: one JSON line per finished `ProblemResult`, behind a header line that
fingerprints the evaluation settings.

  store = ResultsFile(workdir / "results.jsonl")
  done = store.start(eval_fingerprint(checkpoint=ckpt, settings=settings, benchmarks=names), overwrite=False)
  evaluate_problems(..., skip=done, on_result=store.append)
  store.close()
  results = store.load()

A run killed at any point loses at most the line being written: `load` ignores a truncated last line, and `start`
cuts it off before appending. Resuming with different settings (checkpoint, sampling, seed, benchmarks, problem
list) raises `ResultsMismatchError`, because mixing samples of two settings would silently corrupt pass@k.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prorl_jax.evaluation.runner import EvalSettings, ProblemResult

try:
  import fcntl
except ImportError:  # Windows: no advisory locks, a second writer is not detected.
  fcntl = None

FORMAT = "prorl_jax.eval_results/1"
_HEADER_KEY = "__header__"
# Settings that change which samples are drawn or how they are scored; batch size and keep_responses do not.
_SAMPLING_FIELDS = ("num_samples", "temperature", "top_p", "top_k", "max_new_tokens", "seed")


class ResultsMismatchError(ValueError):
  """The results file was written with other evaluation settings than the ones given."""


class ResultsFileError(ValueError):
  """The results file is not one this module wrote, or a complete line in it is corrupt."""


def eval_fingerprint(*, checkpoint: str, settings: EvalSettings, benchmarks: Sequence[str],
                     problem_ids: Sequence[str] | None = None, **extra: Any) -> dict[str, Any]:
  """The settings a results file must match to be resumed.

  Args:
    checkpoint: what identifies the evaluated weights (a path, a hub id, "path@step").
    settings: the sampling settings; the fields that change the samples are recorded.
    benchmarks: benchmark names, in evaluation order.
    problem_ids: the ids of all problems in evaluation order (their index is what a resume skips by); stored as a
      SHA-256 so a changed or reordered problem list is caught.
    **extra: anything else that must match (e.g. prompt template, reward timeouts); JSON-serialisable.
  """
  fp: dict[str, Any] = {"checkpoint": str(checkpoint), "benchmarks": list(benchmarks)}
  fp.update({name: getattr(settings, name) for name in _SAMPLING_FIELDS})
  if problem_ids is not None:
    digest = hashlib.sha256("\n".join(map(str, problem_ids)).encode()).hexdigest()
    fp["problems"] = {"count": len(problem_ids), "sha256": digest}
  fp.update(extra)
  return json.loads(json.dumps(fp, sort_keys=True))  # canonical: tuples become lists, as after a reload


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  return [f"{k}: file has {old.get(k, '<unset>')!r}, now {new.get(k, '<unset>')!r}"
          for k in sorted(set(old) | set(new)) if old.get(k, "<unset>") != new.get(k, "<unset>")]


class ResultsFile:
  """Append-only JSON-lines store of `ProblemResult`s for one evaluation run."""

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)
    self._file = None

  # ---- reading ----------------------------------------------------------------------------------------

  def _lines(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]], int]:
    """(header, records, byte length of the complete part) of the file; a truncated last line is left out."""
    if not self.path.exists():
      return None, [], 0
    data = self.path.read_bytes()
    header, records, good_end, pos = None, [], 0, 0
    while pos < len(data):
      end = data.find(b"\n", pos)
      if end < 0:  # no newline: the write of the last line was cut short
        break
      line = data[pos:end]
      line_no = len(records) + (header is not None) + 1
      try:
        obj = json.loads(line)
      except ValueError:
        raise ResultsFileError(f"{self.path}: line {line_no} is not valid JSON but is followed by more lines; the "
                               "file is corrupt: evaluate into a new workdir or pass --overwrite") from None
      if header is None:
        if not isinstance(obj, dict) or _HEADER_KEY not in obj or obj[_HEADER_KEY].get("format") != FORMAT:
          raise ResultsFileError(f"{self.path}: the first line is not a {FORMAT} header; this file was not "
                                 "written by ResultsFile: choose another path or pass --overwrite")
        header = obj[_HEADER_KEY]
      else:
        records.append(obj)
      pos = good_end = end + 1
    if header is None and data:
      raise ResultsFileError(f"{self.path}: no complete header line; pass --overwrite to start again")
    return header, records, good_end

  def header(self) -> dict[str, Any] | None:
    """The header ({"format", "fingerprint"}), or None when the file does not exist yet."""
    return self._lines()[0]

  def load(self) -> list[ProblemResult]:
    """The completed results, ordered by problem index (a later line for the same index wins)."""
    _, records, _ = self._lines()
    by_index: dict[int, ProblemResult] = {}
    fields = set(ProblemResult.__dataclass_fields__) - {"responses"}
    for line_no, rec in enumerate(records, 2):
      missing = sorted(fields - set(rec)) if isinstance(rec, dict) else ["<not an object>"]
      if missing:
        raise ResultsFileError(f"{self.path}: line {line_no} lacks {missing}; the file is corrupt")
      result = ProblemResult.from_json(rec)
      by_index[int(result.index)] = result
    return [by_index[i] for i in sorted(by_index)]

  def done_indices(self) -> set[int]:
    """Indices of the problems already scored (pass them as `evaluate_problems(skip=...)`)."""
    return {r.index for r in self.load()}

  # ---- writing ----------------------------------------------------------------------------------------

  def start(self, fingerprint: Mapping[str, Any], *, overwrite: bool = False) -> set[int]:
    """Opens the file for appending and returns the indices already done.

    A new file gets a header with `fingerprint`. An existing one must carry the same fingerprint, else
    `ResultsMismatchError` (with `overwrite=True` it is replaced instead). A truncated last line is cut off.
    """
    if self._file is not None:
      raise RuntimeError(f"{self.path} is already open; call close() first")
    fingerprint = json.loads(json.dumps(dict(fingerprint), sort_keys=True))
    if overwrite and self.path.exists():
      self.path.unlink()
    header, _, good_end = self._lines()
    if header is not None and header.get("fingerprint") != fingerprint:
      diffs = "; ".join(_differences(header.get("fingerprint") or {}, fingerprint))
      raise ResultsMismatchError(f"{self.path} holds results of a different evaluation ({diffs}); use a new workdir "
                                 "or pass --overwrite to discard them")
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._file = open(self.path, "ab")  # noqa: SIM115 -- kept open across appends, closed by close()
    if fcntl is not None:
      try:
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        self._file.close()
        self._file = None
        raise RuntimeError(f"{self.path} is being written by another process") from None
    if header is None:
      self._file.truncate(0)
      self._write([{_HEADER_KEY: {"format": FORMAT, "fingerprint": fingerprint}}])
    elif self.path.stat().st_size != good_end:
      self._file.truncate(good_end)  # drop the half-written last line before appending after it
    return self.done_indices()

  def _write(self, objects: Iterable[Mapping[str, Any]]) -> None:
    if self._file is None:
      raise RuntimeError(f"{self.path} is not open; call start(fingerprint) first")
    payload = b"".join(json.dumps(o, allow_nan=True).encode() + b"\n" for o in objects)
    self._file.write(payload)
    self._file.flush()
    os.fsync(self._file.fileno())

  def append(self, result: ProblemResult) -> None:
    """Writes one finished problem and syncs it to disk (usable as `evaluate_problems(on_result=...)`)."""
    self._write([result.to_json()])

  def extend(self, results: Iterable[ProblemResult]) -> None:
    """Writes a batch of finished problems with a single flush + fsync."""
    self._write([r.to_json() for r in results])

  def close(self) -> None:
    if self._file is not None:
      with contextlib.suppress(OSError):
        if fcntl is not None:
          fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self) -> ResultsFile:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()
