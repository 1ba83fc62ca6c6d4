"""The dataset schema: one RL prompt with its domain and the ground truth its verifier needs.

Ground-truth formats follow the rewards API `prorl_jax.rewards.score(domain, response, ground_truth)`
(ProRL P1 §3.1, Table 4):
  math   -- the answer string (e.g. "\\frac{3}{4}"), checked by Math-Verify.
  code   -- {"inputs": [...], "outputs": [...]} (stdin/stdout strings) or, with "fn_name", call-based tests where
            each input is an argument list; or test programs: {"test": SOURCE, "entry_point": NAME} (HumanEval's
            check(candidate)) or {"assert_tests": [STATEMENT, ...], "setup": optional SOURCE} (MBPP's asserts);
            score = fraction of tests passed.
  logic  -- {"task": <Reasoning Gym task name>, "entry": <the dict the Reasoning Gym dataset produced>}.
  stem   -- the letter of the correct option ("A".."Z").
  ifeval -- {"instruction_id_list": [...], "kwargs": [{...}, ...]} in Google IFEval's format.

In files (`to_row`), dict ground truths and `extra` are JSON strings written with `jsonio`, so tuples, sets and
Fractions inside Reasoning Gym entries survive the round trip exactly.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from prorl_jax.data import jsonio

DOMAINS = ("math", "code", "logic", "stem", "ifeval")

# Names other datasets use for our domains (verl's `ability`, ProRL's data sources); compared lower-cased.
DOMAIN_ALIASES = {
    "mathematics": "math", "math_dapo": "math", "deepscaler": "math",
    "coding": "code", "codegen": "code", "programming": "code",
    "reasoning_gym": "logic", "reasoning-gym": "logic", "puzzle": "logic", "puzzles": "logic",
    "science": "stem", "gpqa": "stem", "mcq": "stem",
    "if": "ifeval", "instruction_following": "ifeval", "instruction-following": "ifeval",
    "instruction": "ifeval", "ifeval_like": "ifeval",
}

_ROLES = ("system", "user", "assistant")
_FIELD_FIX = {
    "math": "domain 'math' needs the answer string",
    "code": "domain 'code' needs {'inputs': [...], 'outputs': [...]} and optionally 'fn_name', or "
            "{'test': SOURCE, 'entry_point': NAME}, or {'assert_tests': [STATEMENT, ...]} and optionally 'setup'",
    "logic": "domain 'logic' needs {'task': <reasoning_gym task>, 'entry': <dataset entry dict>}",
    "stem": "domain 'stem' needs the option letter A-Z; for free-form STEM answers use domain 'math'",
    "ifeval": "domain 'ifeval' needs {'instruction_id_list': [...], 'kwargs': [{...}, ...]}",
}


class DataError(ValueError):
  """A malformed example or row. The message names the dataset, the row, the field and the fix."""

  def __init__(self, field: str, problem: str, fix: str = "", where: str = ""):
    self.field, self.problem, self.fix, self.where = field, problem, fix, where
    text = f"field '{field}' {problem}" + (f" ({fix})" if fix else "")
    super().__init__(f"{where}: {text}" if where else text)

  def at(self, where: str) -> DataError:
    """Returns the same error located at `where` (e.g. "dataset 'foo.jsonl' row 17")."""
    return DataError(self.field, self.problem, self.fix, where)


def normalize_domain(value: Any) -> str:
  """Maps a domain name or alias (case-insensitive) to one of `DOMAINS`."""
  if not isinstance(value, str) or not value.strip():
    raise DataError("domain", f"is {value!r}", f"use one of {', '.join(DOMAINS)}")
  name = value.strip().lower()
  name = DOMAIN_ALIASES.get(name, name)
  if name not in DOMAINS:
    raise DataError("domain", f"is {value!r}, which is not a known domain",
                    f"use one of {', '.join(DOMAINS)} or pass domain=... / a column_map")
  return name


def _is_list(value: Any) -> bool:
  return isinstance(value, (list, tuple))


def _normalize_test_programs(value: dict[str, Any], fix: str) -> dict[str, Any]:
  """The code forms whose tests are programs: HumanEval's {"test", "entry_point"}, MBPP's {"assert_tests"}."""
  setup = value.get("setup")
  if setup is not None and not isinstance(setup, str):
    raise DataError("ground_truth", f"has a 'setup' of type {type(setup).__name__}, not source code", fix)
  if "assert_tests" in value:
    tests = value["assert_tests"]
    if not _is_list(tests) or not tests or not all(isinstance(t, str) and t.strip() for t in tests):
      raise DataError("ground_truth", "has 'assert_tests' that is not a non-empty list of statements", fix)
    value["assert_tests"] = list(tests)
    return value
  test, entry = value.get("test"), value.get("entry_point")
  if not isinstance(test, str) or not test.strip():
    raise DataError("ground_truth", "lacks the 'test' source that defines check(candidate)", fix)
  if not isinstance(entry, str) or not entry.isidentifier():
    raise DataError("ground_truth", f"has entry_point {entry!r}, not a Python identifier", fix)
  return value


def normalize_ground_truth(domain: str, value: Any) -> Any:
  """Checks `value` against the format of `domain` and returns its canonical form.

  Dict ground truths may arrive as JSON text (as stored in files); they are decoded here.
  """
  fix = _FIELD_FIX[domain]
  if value is None:
    raise DataError("ground_truth", "is missing", fix)
  if domain in ("code", "logic", "ifeval") and isinstance(value, str):
    try:
      value = jsonio.loads(value)
    except ValueError as e:
      raise DataError("ground_truth", f"is a string that is not valid JSON ({e})", fix) from None
  if domain == "math":
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
      raise DataError("ground_truth", f"has type {type(value).__name__}", fix)
    value = str(value).strip()
    if not value:
      raise DataError("ground_truth", "is empty", fix)
    return value
  if domain == "stem":
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]", value.strip()):
      raise DataError("ground_truth", f"is {value!r}, not a single option letter", fix)
    return value.strip().upper()
  if not isinstance(value, Mapping):
    raise DataError("ground_truth", f"has type {type(value).__name__}, expected a dict", fix)
  value = dict(value)
  if domain == "code":
    if "assert_tests" in value or "test" in value or "entry_point" in value:
      return _normalize_test_programs(value, fix)
    inputs, outputs = value.get("inputs"), value.get("outputs")
    if not _is_list(inputs) or not _is_list(outputs):
      raise DataError("ground_truth", "lacks the 'inputs'/'outputs' lists", fix)
    if len(inputs) != len(outputs) or not inputs:
      raise DataError("ground_truth", f"has {len(inputs)} inputs and {len(outputs)} outputs", fix
                      + "; both lists must have the same, non-zero length")
    fn_name = value.get("fn_name")
    if fn_name is not None:
      if not isinstance(fn_name, str) or not fn_name.isidentifier():
        raise DataError("ground_truth", f"has fn_name {fn_name!r}, not a Python identifier", fix)
      if not all(_is_list(args) for args in inputs):
        raise DataError("ground_truth", "is call-based (fn_name) but an input is not an argument list", fix)
    elif not all(isinstance(x, str) for x in list(inputs) + list(outputs)):
      raise DataError("ground_truth", "is stdin/stdout but an input or output is not a string", fix
                      + "; set 'fn_name' for call-based tests")
    return value
  if domain == "logic":
    if not isinstance(value.get("task"), str) or not value["task"]:
      raise DataError("ground_truth", "lacks the Reasoning Gym 'task' name", fix)
    if not isinstance(value.get("entry"), Mapping):
      raise DataError("ground_truth", "lacks the 'entry' dict", fix)
    return value
  # ifeval
  ids, kwargs = value.get("instruction_id_list"), value.get("kwargs")
  if not _is_list(ids) or not ids or not all(isinstance(i, str) for i in ids):
    raise DataError("ground_truth", "lacks a non-empty 'instruction_id_list' of strings", fix)
  if kwargs is None:
    kwargs = [{} for _ in ids]
  if not _is_list(kwargs) or len(kwargs) != len(ids):
    raise DataError("ground_truth", "needs one 'kwargs' dict per instruction id", fix)
  # Hugging Face's google/IFEval fills every possible argument with None; IFEval's own runner drops those.
  clean = []
  for kw in kwargs:
    if kw is not None and not isinstance(kw, Mapping):
      raise DataError("ground_truth", f"has a kwargs entry of type {type(kw).__name__}", fix)
    clean.append({k: v for k, v in (kw or {}).items() if v is not None})
  value["instruction_id_list"], value["kwargs"] = list(ids), clean
  return value


def normalize_messages(messages: Any) -> list[dict[str, str]]:
  """Checks chat messages: a non-empty list of {"role", "content"} dicts ending with a user turn."""
  if isinstance(messages, str):
    try:
      messages = jsonio.loads(messages)
    except ValueError:
      raise DataError("messages", "is a string that is not a JSON list of messages",
                      "pass the prompt text as 'prompt' instead") from None
  if not _is_list(messages) or not messages:
    raise DataError("messages", "is not a non-empty list", "use [{'role': 'user', 'content': '...'}]")
  out = []
  for i, m in enumerate(messages):
    if not isinstance(m, Mapping) or set(m) != {"role", "content"}:
      keys = sorted(m) if isinstance(m, Mapping) else type(m).__name__
      raise DataError(f"messages[{i}]", f"is {keys}", "each message must be a dict with exactly 'role' and 'content'")
    if m["role"] not in _ROLES or not isinstance(m["content"], str):
      raise DataError(f"messages[{i}]", f"has role {m['role']!r} / content of type {type(m['content']).__name__}",
                      f"role must be one of {_ROLES} and content a string")
    out.append({"role": m["role"], "content": m["content"]})
  if out[-1]["role"] != "user":
    raise DataError("messages", f"ends with a {out[-1]['role']!r} turn", "the last message must be the user's")
  return out


@dataclasses.dataclass(frozen=True)
class Example:
  """One RL prompt. Exactly one of `prompt` (plain text) or `messages` (chat turns) is set.

  Construction validates and canonicalises every field (domain aliases, stem letters upper-cased, IFEval
  kwargs without None values, dict ground truths decoded from JSON text) and raises `DataError`.
  """

  id: str
  domain: str
  prompt: str | None = None
  messages: list[dict[str, str]] | None = None
  ground_truth: Any = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    where = f"example {self.id!r}"
    def set_(name: str, value: Any) -> None:  # Canonicalise a field of this frozen instance.
      object.__setattr__(self, name, value)

    try:
      if isinstance(self.id, int) and not isinstance(self.id, bool):
        set_("id", str(self.id))
      if not isinstance(self.id, str) or not self.id:
        raise DataError("id", f"is {self.id!r}", "use a non-empty string")
      set_("domain", normalize_domain(self.domain))
      if (self.prompt is None) == (self.messages is None):
        raise DataError("prompt", "and 'messages' are both " + ("missing" if self.prompt is None else "set"),
                        "set exactly one of them")
      if self.prompt is not None and (not isinstance(self.prompt, str) or not self.prompt.strip()):
        raise DataError("prompt", "is not a non-empty string", "use the problem text")
      if self.messages is not None:
        set_("messages", normalize_messages(self.messages))
      set_("ground_truth", normalize_ground_truth(self.domain, self.ground_truth))
      extra = self.extra
      if isinstance(extra, str):
        extra = jsonio.loads(extra) if extra else {}
      if extra is None:
        extra = {}
      if not isinstance(extra, Mapping):
        raise DataError("extra", f"has type {type(extra).__name__}", "use a dict (or leave it out)")
      set_("extra", dict(extra))
    except DataError as e:
      raise e.at(e.where or where) from None

  @property
  def text(self) -> str:
    """The user's text: `prompt`, or the content of the last (user) message."""
    return self.prompt if self.prompt is not None else self.messages[-1]["content"]

  def to_row(self) -> dict[str, Any]:
    """A flat row for jsonl/parquet: dict ground truths and `extra` become tagged JSON strings."""
    gt = self.ground_truth if isinstance(self.ground_truth, str) else jsonio.dumps(self.ground_truth)
    try:
      extra = jsonio.dumps(self.extra)
    except TypeError as e:
      raise DataError("extra", str(e), "store only JSON-like values", f"example {self.id!r}") from None
    return {"id": self.id, "domain": self.domain, "prompt": self.prompt,
            "messages": None if self.messages is None else [dict(m) for m in self.messages],
            "ground_truth": gt, "extra": extra}

  @classmethod
  def from_row(cls, row: Mapping[str, Any], *, where: str = "row") -> Example:
    """Inverse of `to_row`; also accepts dict ground truth/extra. Errors are located at `where`."""
    if not isinstance(row, Mapping):
      raise DataError("<row>", f"has type {type(row).__name__}", "each row must be a JSON object", where)
    unknown = set(row) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise DataError(sorted(unknown)[0], "is not a schema field",
                      "map dataset columns onto the schema with column_map=...", where)
    for name in ("id", "domain"):
      if row.get(name) is None:
        raise DataError(name, "is missing", "every row needs an id and a domain", where)
    try:
      return cls(id=row["id"], domain=row["domain"], prompt=row.get("prompt"), messages=row.get("messages"),
                 ground_truth=row.get("ground_truth"), extra=row.get("extra") or {})
    except DataError as e:
      raise e.at(where) from None
