"""Code reward (ProRL App. D, Eurus-2-RL / PRIME tests): fraction of test cases the last Python block passes.

Rules (ALGORITHMS.md §12): the code is the last fenced Python block (```python or a plain ```) of the answer (the
text after the last </think>); every test runs (no early stop); a syntax error, no code, or a whole run longer than
`timeout_s` (5 s, start-up included) gives 0. Tests come in four forms:
  stdin/stdout  {"inputs": [str, ...], "outputs": [str, ...]}                      (APPS, TACO, CodeContests)
  call-based    {"fn_name": f, "inputs": [[arg, ...], ...], "outputs": [ret, ...]} (APPS, TACO, LeetCode)
  HumanEval     {"test": SOURCE, "entry_point": NAME}        the program, then SOURCE, then check(NAME): one test,
                                                             so the reward is 1 or 0
  MBPP          {"assert_tests": [STATEMENT, ...], "setup": optional SOURCE}   each statement is one test, run
                                                             after the program and the setup; reward = fraction
and PRIME's encoding of the call-based form (each input a string of one JSON argument per line, each output a JSON
string). The ground truth may be that dict or its JSON string. Programs run in `sandbox.run_sandboxed`; expected
outputs stay in this process and are compared here.

Comparison (as the APPS/PRIME checkers do, minus their order-insensitive token-set fallback, which accepts
permutations of the right answer): stdout matches when equal after stripping trailing whitespace on every line and
trailing blank lines, or after also stripping leading whitespace and dropping blank lines, or token by token where
every non-integer numeric token may differ by |a - b| <= 1e-8 + 1e-5 |b| (numpy.allclose defaults, as PRIME). A
call-based return value matches when equal to the expected value, or to its only element when the dataset wraps
return values in a list (APPS/TACO).

Test programs (the HumanEval and MBPP forms) run in the program's process, so their verdicts are built not to be
forgeable by it (SANDBOX.md, "Test programs"): each assert at the top level of check() or of an MBPP statement is
rewritten to report the value(s) it compares, and the comparison, with its expected literal, happens here (the
literal never enters the sandbox); values travel as plain data read through their builtin base types, so a
program's own __eq__ / __bool__ / arithmetic never decides a test (an object that is not plain data fails the
test); other asserts (in loops, helpers) are checked in the sandbox on the same plain copies. A test passes only if
its test code ran to the end (a record with a per-test nonce) and every reported comparison holds. Each test gets a
share of the budget, so one that hangs costs that test only; every test runs in a fresh process.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import re
import site
import time
from typing import Any

from prorl_jax.rewards import _code_harness
from prorl_jax.rewards.code_programs import ProgramTests, decode_value, holds, program_plan
from prorl_jax.rewards.sandbox import SandboxConfig, SandboxLimits, run_sandboxed

_HARNESS = os.path.abspath(_code_harness.__file__)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


@dataclasses.dataclass(frozen=True)
class CodeTests:
  """Validated tests. call-based when fn_name is set: inputs are argument lists, outputs the return values."""
  inputs: tuple[Any, ...]
  outputs: tuple[Any, ...]
  fn_name: str | None = None


@dataclasses.dataclass(frozen=True)
class CodeResult:
  """Outcome of one program; per-test fields are [num_tests] tuples.

  status: "ok" (tests ran; see passed / test_status: pass | wrong_answer | error | crashed, and for test programs
  also timeout (the test ran past its share of the budget) | invalid_record), "syntax_error", "timeout" (the whole
  run exceeded its budget) or "harness_failed" (the program killed its own test harness).
  """
  status: str
  passed: tuple[bool, ...]
  test_status: tuple[str, ...]
  errors: tuple[str, ...]
  elapsed_s: float
  isolation: tuple[str, ...] = ()
  outputs: tuple[str, ...] = ()  # first 1000 characters of what each test printed / returned, for debugging
  token: str = ""  # the sandbox run's PRORL_SANDBOX_TOKEN and dedicated uid, to audit what it left behind
  run_uid: int | None = None

  @property
  def reward(self) -> float:
    if self.status != "ok" or not self.passed:
      return 0.0
    return sum(self.passed) / len(self.passed)


def extract_code(response: str) -> str | None:
  """The last complete ```python (or untagged) block after the last </think>; None when there is none.

  A response that starts with <think> and never closes it has no answer yet, so it has no code either.
  """
  if not isinstance(response, str):
    return None
  if "</think>" in response:
    response = response.rsplit("</think>", 1)[1]
  elif response.lstrip().startswith("<think>"):
    return None
  blocks = [body for tag, body in _FENCE.findall(response) if tag.lower() in _PYTHON_TAGS]
  code = blocks[-1].rstrip() if blocks else ""
  return code if code.strip() else None


_FORMS = ("{'inputs': [...], 'outputs': [...]} (+ optional 'fn_name'), {'test': SOURCE, 'entry_point': NAME} or "
          "{'assert_tests': [STATEMENT, ...]} (+ optional 'setup'), as a dict or its JSON string")


def _field_error(field, problem, index=None):
  where = f"ground_truth[{field!r}]" + ("" if index is None else f"[{index}]")
  return ValueError(f"code {where} {problem}; expected {_FORMS}")


def _maybe_json(value):
  if isinstance(value, str):
    try:
      return json.loads(value)
    except ValueError:
      return value
  return value


def _parse_source(source, field, index=None):
  """The AST of a test source from the ground truth; ValueError naming the field when it is not Python."""
  try:
    return ast.parse(source)
  except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
    where = f", line {e.lineno}" if isinstance(e, SyntaxError) else ""
    raise _field_error(field, f"is not valid Python ({type(e).__name__}: {getattr(e, 'msg', e)}{where})",
                       index) from None


def _program_tests(gt: dict) -> ProgramTests:
  """The HumanEval ({"test", "entry_point"}) or MBPP ({"assert_tests", "setup"}) form, validated."""
  setup = gt.get("setup") or ""
  if not isinstance(setup, str):
    raise _field_error("setup", f"must be a string of Python run before the tests, got {type(setup).__name__}")
  _parse_source(setup, "setup")
  if "assert_tests" not in gt:
    test, entry = gt.get("test"), gt.get("entry_point")
    if not isinstance(test, str) or not test.strip():
      raise _field_error("test", f"must be the test source defining check(candidate), got {type(test).__name__}")
    if not any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in _parse_source(test, "test").body):
      raise _field_error("test", "defines no top-level check(candidate) function (HumanEval's test source does)")
    if not isinstance(entry, str) or not entry.isidentifier():
      raise _field_error("entry_point", f"must be the name of the function under test, got {entry!r}")
    return ProgramTests((test,), setup, entry)
  statements = gt["assert_tests"]
  if not isinstance(statements, list) or not statements:
    raise _field_error("assert_tests", f"must be a non-empty list of assert statements, got "
                       f"{type(statements).__name__ if not isinstance(statements, list) else 'an empty list'}")
  for k, statement in enumerate(statements):
    if not isinstance(statement, str) or not statement.strip():
      raise _field_error("assert_tests", f"must be a statement of Python, got {statement!r}", k)
    _parse_source(statement, "assert_tests", k)
  return ProgramTests(tuple(statements), setup, None)


def parse_tests(ground_truth: dict | str) -> CodeTests | ProgramTests:
  """Validates the ground truth; raises ValueError naming the bad field (a dataset bug, not a bad response)."""
  gt = ground_truth
  if isinstance(gt, (str, bytes)):
    try:
      gt = json.loads(gt)
    except ValueError as e:
      raise ValueError(f"code ground_truth is a string but not valid JSON ({e})") from None
  if not isinstance(gt, dict):
    raise ValueError(f"code ground_truth must be a dict or a JSON string of one, got {type(gt).__name__}")
  if "assert_tests" in gt or "test" in gt or "entry_point" in gt:
    return _program_tests(gt)
  inputs, outputs = gt.get("inputs"), gt.get("outputs")
  if not isinstance(inputs, list) or not inputs:
    raise _field_error("inputs", f"must be a non-empty list, got {type(inputs).__name__}")
  if not isinstance(outputs, list) or len(outputs) != len(inputs):
    raise _field_error("outputs", f"must be a list as long as inputs ({len(inputs)}), got "
                       f"{len(outputs) if isinstance(outputs, list) else type(outputs).__name__}")
  fn_name = gt.get("fn_name") or None
  if fn_name is None:
    ins, outs = [], []
    for k, (i, o) in enumerate(zip(inputs, outputs)):
      for field, v, acc in (("inputs", i, ins), ("outputs", o, outs)):
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
          v = "\n".join(v)  # APPS sometimes stores lines
        if not isinstance(v, str):
          raise _field_error(field, f"must be a string for stdin/stdout tests, got {type(v).__name__}", k)
        acc.append(v)
    return CodeTests(tuple(ins), tuple(outs), None)
  if not isinstance(fn_name, str) or not fn_name.isidentifier():
    raise _field_error("fn_name", f"must be a Python identifier, got {fn_name!r}")
  args = []
  for k, i in enumerate(inputs):
    if isinstance(i, str):  # PRIME: one JSON-encoded argument per line
      try:
        i = [json.loads(line) for line in i.split("\n") if line.strip()]
      except ValueError as e:
        raise _field_error("inputs", f"is a string but not one JSON value per line ({e})", k) from None
    if not isinstance(i, list):
      raise _field_error("inputs", f"must be a list of arguments, got {type(i).__name__}", k)
    try:
      json.dumps(i)  # arguments travel into the sandbox as JSON
    except (TypeError, ValueError) as e:
      raise _field_error("inputs", f"must be JSON-serialisable ({e})", k) from None
    args.append(i)
  return CodeTests(tuple(args), tuple(_maybe_json(o) for o in outputs), fn_name)


def _lines(text, strip_left):
  lines = [ln.strip() if strip_left else ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
  if strip_left:
    return [ln for ln in lines if ln]
  while lines and not lines[-1]:
    lines.pop()
  return lines


def _tokens_close(a, b):
  if a == b:
    return True
  if not (_NUMBER.fullmatch(a) and _NUMBER.fullmatch(b)) or (_INTEGER.fullmatch(a) and _INTEGER.fullmatch(b)):
    return False
  x, y = float(a), float(b)
  return math.isfinite(x) and math.isfinite(y) and abs(x - y) <= 1e-8 + 1e-5 * abs(y)


def stdout_matches(output: str, expected: str) -> bool:
  """Checker for stdin/stdout tests (see module docstring)."""
  if _lines(output, False) == _lines(expected, False):
    return True
  out, exp = _lines(output, True), _lines(expected, True)
  if out == exp:
    return True
  if len(out) != len(exp):
    return False
  for lo, le in zip(out, exp):
    to, te = lo.split(), le.split()
    if len(to) != len(te) or not all(_tokens_close(a, b) for a, b in zip(to, te)):
      return False
  return True


def return_matches(value: Any, expected: Any) -> bool:
  """Checker for call-based tests: equal, or equal to the single wrapped element (APPS/TACO store [ret])."""
  if value == expected:
    return True
  return isinstance(expected, list) and len(expected) == 1 and value == expected[0]


def _output_cap(expected):
  size = len(expected) if isinstance(expected, str) else len(json.dumps(expected))
  return max(64 << 10, 4 * size)


# ---- running -------------------------------------------------------------------------------------------------


def _io_spec(tests: CodeTests):
  caps = [_output_cap(o) for o in tests.outputs]
  spec = {"mode": "stdio" if tests.fn_name is None else "call", "fn_name": tests.fn_name,
          "inputs": list(tests.inputs), "output_caps": caps}
  return spec, 6 * sum(caps) + (1 << 20)  # JSON escaping can grow control characters six-fold


def _program_spec(tests: ProgramTests, timeout_s: float):
  plan = program_plan(tests)
  # The harness stops starting tests, and kills a running one, a little before the sandbox's own deadline, so
  # its results get out; time.monotonic() is the same clock in the sandbox (no time namespace).
  deadline = time.monotonic() + timeout_s - min(0.3, 0.1 * timeout_s)
  spec = {"mode": "program", "tests": [{"source": s, "slots": len(c)} for s, c in zip(plan.sources, plan.checks)],
          "setup": plan.setup, "names": list(plan.names), "imports": list(plan.imports),
          "entry_point": tests.entry_point, "deadline": deadline}
  # Reported values: at most 1 MiB of records per test (re-encoded by the harness), 64 MiB in all.
  return spec, min(len(plan.sources) * (3 << 20), 64 << 20) + (1 << 20)


def _judge_io(tests: CodeTests, by_index: dict) -> tuple[list, list, list, list]:
  passed, statuses, errors, outputs = [], [], [], []
  for k, expected in enumerate(tests.outputs):
    e = by_index[k]
    ok = e.get("status") == "ok" and not e.get("truncated")
    if ok and tests.fn_name is None:
      ok = stdout_matches(e.get("output", ""), expected)
    elif ok:
      try:
        ok = return_matches(json.loads(e.get("output", "")), expected)
      except ValueError:
        ok = False
    passed.append(bool(ok))
    statuses.append(str(e.get("status")) if e.get("status") != "ok" else ("pass" if ok else "wrong_answer"))
    errors.append(str(e.get("error", ""))[-2000:])
    outputs.append(str(e.get("output", ""))[:1000])
  return passed, statuses, errors, outputs


def _judge_programs(tests: ProgramTests, by_index: dict) -> tuple[list, list, list, list]:
  checks = program_plan(tests).checks
  passed, statuses, errors, outputs = [], [], [], []
  for k, test_checks in enumerate(checks):
    e = by_index[k]
    status, error = str(e.get("status")), str(e.get("error", ""))[-2000:]
    if status == "ok":
      try:
        reported = e.get("values")
        values = [[decode_value(v) for v in slot] for slot in reported]
        if len(values) != len(test_checks):
          raise ValueError(f"{len(values)} reported asserts of {len(test_checks)}")
        failed = [j for j, (c, v) in enumerate(zip(test_checks, values)) if not holds(c, v)]
        status = "wrong_answer" if failed else "pass"
        error = f"assert {failed[0]} of the test failed" if failed else ""
      except (ValueError, TypeError, RecursionError, MemoryError) as err:
        status, error = "invalid_record", str(err)
    passed.append(status == "pass")
    statuses.append(status)
    errors.append(error)
    outputs.append(str(e.get("output", ""))[:1000])
  return passed, statuses, errors, outputs


def run_tests(code: str, tests: CodeTests | ProgramTests, *, timeout_s: float = 5.0,
              limits: SandboxLimits | None = None, config: SandboxConfig | None = None) -> CodeResult:
  """Runs `code` on every test in one sandboxed run of `timeout_s` seconds; per-test verdicts in the result."""
  programs = isinstance(tests, ProgramTests)
  spec, stdout_cap = _program_spec(tests, timeout_s) if programs else _io_spec(tests)
  config = config or SandboxConfig()
  limits = limits or SandboxLimits()
  limits = dataclasses.replace(limits, stdout_bytes=max(limits.stdout_bytes, stdout_cap))
  # The harness runs inside the launcher's interpreter (started with -S: no .pth processing) and puts
  # site-packages on sys.path itself, so solutions can import numpy and friends.
  spec["sys_path"] = [p for p in site.getsitepackages() if os.path.isdir(p)]
  res = run_sandboxed([_HARNESS, "spec.json", "solution.py"], wall_s=timeout_s, python_main=True,
                      files={"spec.json": json.dumps(spec), "solution.py": code}, limits=limits, config=config)
  n = len(tests.sources) if programs else len(tests.inputs)
  ids = {"token": res.token, "run_uid": res.run_uid}
  if res.timed_out:
    return CodeResult("timeout", (False,) * n, ("timeout",) * n, ("",) * n, res.elapsed_s, res.isolation, **ids)
  events = []
  for line in res.stdout.decode("utf-8", errors="replace").splitlines():
    try:
      events.append(json.loads(line))
    except ValueError:
      pass
  compiled = next((e for e in events if e.get("event") == "compile"), None)
  if compiled is not None and not compiled.get("ok"):
    return CodeResult("syntax_error", (False,) * n, ("syntax_error",) * n, (compiled.get("error", ""),) * n,
                      res.elapsed_s, res.isolation, **ids)
  by_index = {}
  for e in events:
    if e.get("event") == "test" and isinstance(e.get("i"), int) and e["i"] not in by_index:
      by_index[e["i"]] = e
  if compiled is None or not any(e.get("event") == "done" for e in events) or len(by_index) != n:
    err = res.stderr.decode("utf-8", errors="replace")[-2000:]
    return CodeResult("harness_failed", (False,) * n, ("harness_failed",) * n, (err,) * n, res.elapsed_s,
                      res.isolation, **ids)
  passed, statuses, errors, outputs = (_judge_programs if programs else _judge_io)(tests, by_index)
  return CodeResult("ok", tuple(passed), tuple(statuses), tuple(errors), res.elapsed_s, res.isolation,
                    tuple(outputs), **ids)


def score_code(response: str, ground_truth: dict | str, *, timeout_s: float = 5.0) -> float:
  """Code reward in [0, 1] for one response. Raises ValueError only for a malformed ground truth."""
  tests = parse_tests(ground_truth)
  if not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s) or timeout_s <= 0:
    raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
  code = extract_code(response)
  if code is None:
    return 0.0
  return run_tests(code, tests, timeout_s=timeout_s).reward
