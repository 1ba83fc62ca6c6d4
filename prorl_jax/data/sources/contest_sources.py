"""Competitive-programming code sources: LiveCodeBench (a benchmark) and PRIME-RL's Eurus-2-RL-Data (ProRL's code
training data, and PRIME's validation set), mapped onto the code reward's stdin/stdout and call-based tests
(`code_sources` registers them beside HumanEval and MBPP).

Layouts:
  livecodebench/code_generation_lite (raw files test.jsonl, test2.jsonl, ...): question_title, question_content,
    platform, question_id, contest_id, contest_date, starter_code, difficulty, public_test_cases (JSON text),
    private_test_cases (JSON text, or base64(zlib(pickle(JSON text))) in later releases), metadata (JSON text with
    func_name for LeetCode). "functional" tests hold one JSON argument per input line and a JSON output.
  PRIME-RL/Eurus-2-RL-Data, train/validation (verl layout): data_source, prompt ([system, user] messages), ability
    ("math"|"code"), reward_model {style, ground_truth: JSON text of {"inputs", "outputs", optional "fn_name"}},
    extra_info {split, index}. PRIME's call-based inputs are strings of one JSON argument per line; they are
    decoded into argument lists here (outputs stay as given: the code reward decodes them).
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import os
import pathlib
import pickle
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

from prorl_jax.data.schema import Example
from prorl_jax.data.sources._rows import HubLocation, Row, Where, column, iter_local, iter_rows, maybe_json
from prorl_jax.data.sources.registry import Context, SourceSpec

LCB_LAYOUT = "livecodebench/code_generation_lite"
EURUS_LAYOUT = "PRIME-RL/Eurus-2-RL-Data (verl: prompt, ability, reward_model.ground_truth)"
_MAX_TESTS_BLOB = 1 << 30  # refuse LiveCodeBench test blobs that inflate beyond 1 GiB
LCB_CALL_TEMPLATE = ("{question}\n\nYou will use the following starter code to write the solution to the problem "
                     "and enclose your code within delimiters.\n```python\n{starter_code}\n```")
LCB_STDIN_TEMPLATE = ("{question}\n\nRead the inputs from stdin, solve the problem and write the answer to stdout "
                      "(do not directly test on the sample inputs).")


# ---- LiveCodeBench --------------------------------------------------------------------------------------

class _TextOnlyUnpickler(pickle.Unpickler):
  """Unpickles plain data only: LiveCodeBench blobs are a pickled JSON string, so any global is refused."""

  def find_class(self, module: str, name: str):
    raise pickle.UnpicklingError(f"refusing {module}.{name}: LiveCodeBench test blobs hold only a JSON string")


def decode_lcb_tests(value: Any, ctx: Context, field: str) -> list[dict[str, Any]]:
  """LiveCodeBench test cases from JSON text or the base64(zlib(pickle(JSON text))) form of later releases."""
  if isinstance(value, list):
    return value
  if not isinstance(value, str):
    raise ctx.error(field, f"has type {type(value).__name__}", "expected JSON text of a list of test cases")
  try:
    return json.loads(value)
  except ValueError:
    pass
  try:
    inflater = zlib.decompressobj()
    raw = inflater.decompress(base64.b64decode(value.encode("ascii"), validate=True), _MAX_TESTS_BLOB)
    if inflater.unconsumed_tail:
      raise ValueError(f"inflates beyond {_MAX_TESTS_BLOB} bytes")
    decoded = _TextOnlyUnpickler(io.BytesIO(raw)).load()
    return json.loads(decoded) if isinstance(decoded, (str, bytes)) else decoded
  except Exception as e:  # noqa: BLE001 -- any decoding failure is a malformed row
    raise ctx.error(field, f"is neither JSON nor LiveCodeBench's compressed form ({type(e).__name__}: {e})",
                    "") from None


def _call_args(text: Any, ctx: Context, field: str) -> list[Any]:
  if isinstance(text, list):
    return text
  try:
    return [json.loads(line) for line in str(text).split("\n") if line.strip()]
  except ValueError as e:
    raise ctx.error(field, f"holds a call-based input that is not one JSON value per line ({e})", "") from None


def convert_livecodebench(row: Row, ctx: Context) -> Example | None:
  """LiveCodeBench row -> code Example (functional tests call-based on metadata.func_name, else stdin/stdout)."""
  qid = str(column(row, "question_id", ctx.where, layout=LCB_LAYOUT))
  date = str(row.get("contest_date") or "")
  start, end = ctx.options["start_date"], ctx.options["end_date"]
  for name, value in (("start_date", start), ("end_date", end)):
    if value is not None:
      try:
        datetime.date.fromisoformat(value)
      except (TypeError, ValueError):
        raise ValueError(f"livecodebench {name} must be an ISO date like '2024-08-01', got {value!r}") from None
  if (start or end) and date:
    try:
      day = datetime.datetime.fromisoformat(date).date().isoformat()
    except ValueError:
      raise ctx.error("contest_date", f"is {date!r}, not an ISO date-time", "") from None
    if (start and day < start) or (end and day > end):
      return None
  tests = decode_lcb_tests(column(row, "public_test_cases", ctx.where, layout=LCB_LAYOUT), ctx, "public_test_cases")
  tests = tests + decode_lcb_tests(row.get("private_test_cases") or "[]", ctx, "private_test_cases")
  if not tests:
    raise ctx.error("public_test_cases", "and private_test_cases are empty", "")
  metadata = maybe_json(row.get("metadata") or {})
  kinds = {t.get("testtype") for t in tests}
  question = str(column(row, "question_content", ctx.where, layout=LCB_LAYOUT)).strip()
  starter = str(row.get("starter_code") or "").strip()
  if kinds == {"functional"}:
    fn_name = metadata.get("func_name") if isinstance(metadata, Mapping) else None
    if not fn_name:
      raise ctx.error("metadata", "has no func_name for functional tests", "")
    truth = {"fn_name": fn_name, "inputs": [_call_args(t["input"], ctx, "tests") for t in tests],
             "outputs": [t["output"] for t in tests]}  # JSON text: the code reward decodes it
    prompt = LCB_CALL_TEMPLATE.format(question=question, starter_code=starter)
  elif kinds == {"stdin"}:
    truth = {"inputs": [t["input"] for t in tests], "outputs": [t["output"] for t in tests]}
    prompt = LCB_STDIN_TEMPLATE.format(question=question)
  else:
    raise ctx.error("public_test_cases", f"mix test types {sorted(map(str, kinds))}", "")
  extra = {k: str(row[k]) for k in ("question_title", "platform", "contest_id", "contest_date", "difficulty")
           if row.get(k)}
  extra["num_tests"] = len(tests)
  return ctx.example(id=qid, domain="code", prompt=prompt, ground_truth=truth, extra=extra)


def lcb_rows(source: Any, hub: HubLocation, where: Where, options: Mapping[str, Any]) -> Iterator[Row]:
  """A local copy of the repository is read file by file as the release names them (test.jsonl, test2.jsonl...)."""
  if isinstance(source, (str, os.PathLike)) and pathlib.Path(source).is_dir():
    files = [pathlib.Path(source) / f for f in hub.data_files if (pathlib.Path(source) / f).is_file()]
    if files:
      for path in files:
        yield from iter_local(path, hub.split)
      return
  yield from iter_rows(source, hub, where)


def lcb_hub(options: Mapping[str, Any]) -> HubLocation:
  version = options["version"]
  if version.startswith("release_v") and version[9:].isdigit():
    files = ["test.jsonl"] + [f"test{i}.jsonl" for i in range(2, int(version[9:]) + 1)]
  elif version.startswith("v") and version[1:].isdigit():
    files = ["test.jsonl" if version == "v1" else f"test{version[1:]}.jsonl"]
  else:
    raise ValueError(f"livecodebench version must look like 'release_v5' or 'v6', got {version!r}")
  return HubLocation("livecodebench/code_generation_lite", split="test", data_files=tuple(files))


# ---- Eurus-2-RL / PRIME validation ----------------------------------------------------------------------

def _lines(value: Any) -> Any:
  if isinstance(value, list) and all(isinstance(v, str) for v in value):
    return "\n".join(value)
  return value


def converteurus_spec(row: Row, ctx: Context) -> Example | None:
  """verl-layout Eurus-2-RL row -> Example; rows of other abilities are dropped."""
  ability = str(column(row, "ability", ctx.where, layout=EURUS_LAYOUT))
  if ability not in ctx.options["abilities"]:
    return None
  messages = maybe_json(column(row, "prompt", ctx.where, layout=EURUS_LAYOUT))
  reward = maybe_json(column(row, "reward_model", ctx.where, layout=EURUS_LAYOUT))
  if not isinstance(reward, Mapping) or reward.get("ground_truth") is None:
    raise ctx.error("reward_model", "has no ground_truth", f"expected the {EURUS_LAYOUT} layout")
  truth = maybe_json(reward["ground_truth"])
  if ability == "code" and isinstance(truth, Mapping):
    if truth.get("fn_name"):
      truth = {**truth, "inputs": [_call_args(i, ctx, "reward_model.ground_truth") for i in truth.get("inputs", [])]}
    else:  # APPS-derived rows may store stdin/stdout as lists of lines
      truth = {**truth, **{k: [_lines(v) for v in truth.get(k) or []] for k in ("inputs", "outputs")}}
  if isinstance(messages, list) and not ctx.options["keep_system_prompt"]:  # PRIME's action-tag system prompt
    messages = [m for m in messages if not (isinstance(m, Mapping) and m.get("role") == "system")]
  info = maybe_json(row.get("extra_info") or {})
  index = info.get("index") if isinstance(info, Mapping) else None
  extra = {"data_source": row.get("data_source"), "ability": ability}
  return ctx.example(id=str(index if index is not None else ctx.index), domain=ability, messages=messages,
                     ground_truth=truth, extra=extra)


def eurus_spec(name: str, kind: str, split: str, description: str) -> SourceSpec:
  return SourceSpec(name=name, kind=kind, domain="code", hub=HubLocation("PRIME-RL/Eurus-2-RL-Data", split=split),
                    convert=converteurus_spec, layout=EURUS_LAYOUT, description=description,
                    defaults={"abilities": ("code",), "keep_system_prompt": False})
