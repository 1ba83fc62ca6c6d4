"""Code reward (ProRL App. D, Eurus-2-RL / PRIME tests): fraction of test cases the last Python block passes.

Rules (ALGORITHMS.md §12): the code is the last fenced Python block (```python or a plain ```) of the answer (the
text after the last </think>); every test runs (no early stop); a syntax error, no code, or a whole run longer than
`timeout_s` (5 s, start-up included) gives 0. Tests come in both common forms:
  stdin/stdout  {"inputs": [str, ...], "outputs": [str, ...]}                      (APPS, TACO, CodeContests)
  call-based    {"fn_name": f, "inputs": [[arg, ...], ...], "outputs": [ret, ...]} (APPS, TACO, LeetCode)
and PRIME's encoding of the call-based form (each input a string of one JSON argument per line, each output a JSON
string). The ground truth may be that dict or its JSON string. Programs run in `sandbox.run_sandboxed`; expected
outputs stay in this process and are compared here.

Comparison (as the APPS/PRIME checkers do, minus their order-insensitive token-set fallback, which accepts
permutations of the right answer): stdout matches when equal after stripping trailing whitespace on every line and
trailing blank lines, or after also stripping leading whitespace and dropping blank lines, or token by token where
every non-integer numeric token may differ by |a - b| <= 1e-8 + 1e-5 |b| (numpy.allclose defaults, as PRIME). A
call-based return value matches when equal to the expected value, or to its only element when the dataset wraps
return values in a list (APPS/TACO).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import site
from typing import Any

from prorl_jax.rewards import _code_harness
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

  status: "ok" (tests ran; see passed / test_status: pass | wrong_answer | error | crashed), "syntax_error",
  "timeout" (the whole run exceeded its budget) or "harness_failed" (the program killed its own test harness).
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


def _field_error(field, problem, index=None):
  where = f"ground_truth[{field!r}]" + ("" if index is None else f"[{index}]")
  return ValueError(f"code {where} {problem}; expected {{'inputs': [...], 'outputs': [...]}} "
                    "(+ optional 'fn_name') as a dict or its JSON string")


def _maybe_json(value):
  if isinstance(value, str):
    try:
      return json.loads(value)
    except ValueError:
      return value
  return value


def parse_tests(ground_truth: dict | str) -> CodeTests:
  """Validates the ground truth; raises ValueError naming the bad field (a dataset bug, not a bad response)."""
  gt = ground_truth
  if isinstance(gt, (str, bytes)):
    try:
      gt = json.loads(gt)
    except ValueError as e:
      raise ValueError(f"code ground_truth is a string but not valid JSON ({e})") from None
  if not isinstance(gt, dict):
    raise ValueError(f"code ground_truth must be a dict or a JSON string of one, got {type(gt).__name__}")
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


def run_tests(code: str, tests: CodeTests, *, timeout_s: float = 5.0, limits: SandboxLimits | None = None,
              config: SandboxConfig | None = None) -> CodeResult:
  """Runs `code` on every test in one sandboxed run of `timeout_s` seconds; per-test verdicts in the result."""
  caps = [_output_cap(o) for o in tests.outputs]
  spec = {"mode": "stdio" if tests.fn_name is None else "call", "fn_name": tests.fn_name,
          "inputs": list(tests.inputs), "output_caps": caps}
  config = config or SandboxConfig()
  limits = limits or SandboxLimits()
  stdout_cap = 6 * sum(caps) + (1 << 20)  # JSON escaping can grow control characters six-fold
  limits = dataclasses.replace(limits, stdout_bytes=max(limits.stdout_bytes, stdout_cap))
  # The harness runs inside the launcher's interpreter (started with -S: no .pth processing) and puts
  # site-packages on sys.path itself, so solutions can import numpy and friends.
  spec["sys_path"] = [p for p in site.getsitepackages() if os.path.isdir(p)]
  res = run_sandboxed([_HARNESS, "spec.json", "solution.py"], wall_s=timeout_s, python_main=True,
                      files={"spec.json": json.dumps(spec), "solution.py": code}, limits=limits, config=config)
  n = len(tests.inputs)
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
