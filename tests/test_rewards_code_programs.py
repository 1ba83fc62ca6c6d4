"""Code reward for test programs: HumanEval's check(candidate) and MBPP's assert statements.

The problems are our own (not the datasets'). Expected rewards are worked out by hand from the problem: a correct
solution scores 1, a wrong one 0, a partly right MBPP solution the fraction of statements it passes. Hostile
programs try to fake a pass (exit early, redefine check, patch assert / builtins / modules, forge the harness's
records, introspect the harness, claim equality) or to hurt the caller (the nine hostile programs of
test_rewards_sandbox.py, in this form); each must score what its honest behaviour earns, and leave nothing behind.
"""

import json
import pathlib
import secrets
import subprocess
import sys
import time

import pytest
from test_rewards_sandbox import _no_workdirs_left, _sandbox_processes, listener  # noqa: F401 -- listener: fixture

from prorl_jax.rewards import RewardManager, score
from prorl_jax.rewards import _code_harness as harness
from prorl_jax.rewards import code_reward as cr
from prorl_jax.rewards import sandbox

BUDGET_S = 1.5

# ---- the problems ------------------------------------------------------------------------------------------

# HumanEval form: second largest distinct value of a list, None when there is none.
SECOND_TEST = '''
METADATA = {"author": "prorl_jax tests", "dataset": "own"}


def check(candidate):
    assert candidate([3, 1, 4, 1, 5]) == 4
    assert candidate([2, 2, 2]) is None
    assert candidate([-1, -7]) == -7
    assert candidate([10, 9.5]) == 9.5
    for n in range(2, 6):
        assert candidate(list(range(n))) == n - 2
'''
SECOND = {"test": SECOND_TEST, "entry_point": "second_largest"}
SECOND_OK = ("def second_largest(xs):\n    values = sorted(set(xs), reverse=True)\n"
             "    return values[1] if len(values) > 1 else None\n")

# MBPP form: vowels in a string, both cases.
VOWELS = {"assert_tests": ["assert count_vowels('banana') == 3", "assert count_vowels('rhythm') == 0",
                           "assert count_vowels('AEIOU xyz') == 5"]}
VOWELS_OK = "def count_vowels(s):\n    return sum(c in 'aeiouAEIOU' for c in s)\n"
VOWELS_LOWER = "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s)\n"  # passes 2 of 3


def fenced(code):
  return f"Let me think.\n</think>\nHere is the solution.\n```python\n{code}```\n"


def run(code, gt, timeout_s=5.0, mode="auto"):
  return cr.run_tests(code, cr.parse_tests(gt), timeout_s=timeout_s, config=sandbox.SandboxConfig(isolation=mode))


# ---- the public API ----------------------------------------------------------------------------------------


def test_correct_wrong_and_partial_solutions_through_score():
  assert score("code", fenced(SECOND_OK), SECOND) == 1.0
  assert score("code", fenced(SECOND_OK), json.dumps(SECOND)) == 1.0
  assert score("code", fenced("def second_largest(xs):\n    return sorted(xs)[-2]\n"), SECOND) == 0.0
  assert score("code", fenced(VOWELS_OK), VOWELS) == 1.0
  assert score("code", fenced(VOWELS_LOWER), VOWELS) == pytest.approx(2 / 3)
  assert score("code", fenced("def count_vowels(s):\n    return 0\n"), VOWELS) == pytest.approx(1 / 3)
  assert score("code", fenced(VOWELS_OK), {**VOWELS, "setup": ""}) == 1.0
  assert score("code", "The answer is count_vowels.", VOWELS) == 0.0  # no code block


def test_setup_runs_before_the_statements():
  gt = {"assert_tests": ["assert math.isclose(mean_of([1, 2, 4]), 7 / 3)", "assert mean_of([5]) == 5"],
        "setup": "import math"}
  assert score("code", fenced("def mean_of(xs):\n    return sum(xs) / len(xs)\n"), gt) == 1.0
  assert score("code", fenced("def mean_of(xs):\n    return xs[0]\n"), gt) == pytest.approx(1 / 2)


def test_syntax_error_and_crash_before_the_tests_score_zero():
  res = run("def count_vowels(s)\n    return 1\n", VOWELS)
  assert res.status == "syntax_error" and res.reward == 0.0
  for code in (VOWELS_OK + "raise RuntimeError('boom')\n", "import sys\n" + VOWELS_OK + "sys.exit(0)\n",
               "import os\n" + VOWELS_OK + "os._exit(0)\n", "raise SystemExit(0)\n" + VOWELS_OK):
    res = run(code, VOWELS)
    assert res.reward == 0.0 and res.status == "ok" and "pass" not in res.test_status, (code, res)


def test_every_statement_runs_and_statements_are_isolated():
  code = ("calls = []\ndef count_vowels(s):\n    calls.append(s)\n    if len(calls) > 1:\n        return -1\n"
          "    return sum(c in 'aeiouAEIOU' for c in s)\n")
  res = run(code, VOWELS)  # each statement runs in a fresh process: `calls` never carries over
  assert res.passed == (True, True, True)
  gt = {"assert_tests": ["assert f(1) == 1\nassert f(2) == 2", "assert f(3) == 3"]}  # one test, two asserts
  assert run("def f(x):\n    return x if x != 2 else 0\n", gt).passed == (False, True)


def test_python_comparison_semantics_are_kept():
  cases = [  # (the function's body, the assert, passes?) -- as plain Python judges `assert`
      ("return 4.0", "assert f() == 4", True), ("return (1, 2)", "assert f() == [1, 2]", False),
      ("return [1, 2]", "assert f() == [1, 2]", True), ("return None", "assert f() is None", True),
      ("return 0", "assert f() is None", False), ("return 5", "assert 0 <= f() < 10", True),
      ("return 10", "assert 0 <= f() < 10", False), ("return ''", "assert not f()", True),
      ("return 'abc'", "assert 'b' in f()", True), ("return 'abc'", "assert f() in ['abc', 'x']", True),
      ("return {'a': 1, 'b': 2}", "assert f() == {'b': 2, 'a': 1}", True), ("return {1, 2}", "assert f() != {1}", True),
      ("import collections\n    return collections.Counter('aab')", "assert f() == {'a': 2, 'b': 1}", True),
      ("import collections\n    return collections.namedtuple('P', 'x y')(1, 2)", "assert f() == (1, 2)", True),
      ("return 3", "assert f() == g()", False), ("return 2", "assert f() == g()", True),
      ("return float('nan')", "assert f() == float('nan')", False), ("return b'x'", "assert f() == b'x'", True),
      ("return 'a'", "assert f() < 1", False),  # TypeError in Python: a failed test
      ("class K:\n        pass\n    return K()", "assert f()", True),  # default truth: no code of its own
      ("import collections\n    return collections.deque()", "assert not f()", True),  # truth decided in C
      ("import re\n    return re.match('a', 'abc')", "assert f()", True),
  ]
  for body, statement, passes in cases:
    res = run(f"def f():\n    {body}\ndef g():\n    return 2\n", {"assert_tests": [statement]})
    assert res.passed == (passes,), (body, statement, res)


def test_asserts_after_an_early_return_in_check_do_not_run():
  gt = {"test": "def check(candidate):\n    assert candidate(2) == 4\n    if candidate(0) == 0:\n        return\n"
                "    assert candidate(3) == 999\n", "entry_point": "square"}
  assert score("code", fenced("def square(x):\n    return x * x\n"), gt) == 1.0
  assert score("code", fenced("def square(x):\n    return x + x\n"), gt) == 1.0  # as Python: 2 + 2 == 4, 0 + 0 == 0
  assert score("code", fenced("def square(x):\n    return x + 2\n"), gt) == 0.0  # 0 + 2 != 0: reaches 5 == 999
  assert score("code", fenced("def square(x):\n    return x ** 3\n"), gt) == 0.0


# ---- budgets: a hanging, hungry or flooding test costs that test only --------------------------------------


@pytest.mark.parametrize("misbehaviour", [
    "while s == 'rhythm':\n        pass",
    "x = []\n    while s == 'rhythm':\n        x.append(bytearray(10 ** 8))",
    "while s == 'rhythm':\n        print('x' * 100000)",
    "import os\n    if s == 'rhythm':\n        os._exit(0)",
    "import sys\n    if s == 'rhythm':\n        sys.exit(0)",
])
def test_a_misbehaving_test_costs_that_test_only(misbehaviour):
  code = f"def count_vowels(s):\n    {misbehaviour}\n    return sum(c in 'aeiouAEIOU' for c in s)\n"
  start = time.monotonic()
  res = run(code, VOWELS, timeout_s=3.0)
  assert time.monotonic() - start < 3.0 + 1.0
  assert res.passed == (True, False, True), res


def test_a_hanging_humaneval_check_scores_zero_within_budget():
  start = time.monotonic()
  res = run("def second_largest(xs):\n    while True:\n        pass\n", SECOND, timeout_s=BUDGET_S)
  assert res.reward == 0.0 and time.monotonic() - start < BUDGET_S + 1.0


# ---- attempts to fake a pass -------------------------------------------------------------------------------

ALWAYS_EQUAL = ("class Anything:\n    def __eq__(self, other): return True\n    def __ne__(self, other): return False\n"
                "    def __lt__(self, other): return True\n    def __bool__(self): return True\n"
                "    def __sub__(self, other): return 0\n    __rsub__ = __sub__\n    def __abs__(self): return 0\n"
                "    def __len__(self): return 0\n    __hash__ = object.__hash__\n")
WRONG = "def count_vowels(s):\n    return -1\n"


@pytest.mark.parametrize("name, code", [
    ("always-equal object", ALWAYS_EQUAL + "def count_vowels(s):\n    return Anything()\n"),
    ("always-equal int subclass", "class N(int):\n    def __eq__(self, other): return True\n"
                                  "def count_vowels(s):\n    return N(-1)\n"),
    ("always-equal list of objects", ALWAYS_EQUAL + "def count_vowels(s):\n    return [Anything()]\n"),
    ("exit(0) before the tests", "import sys\n" + WRONG + "sys.exit(0)\n"),
    ("os._exit(0) before the tests", "import os\n" + WRONG + "os._exit(0)\n"),
    ("exit inside the call", "import os\ndef count_vowels(s):\n    os._exit(0)\n"),
    ("SystemExit inside the call", "def count_vowels(s):\n    raise SystemExit(0)\n"),
    ("redefined check and helpers", WRONG + "def check(*a):\n    return True\n__prorl_report__ = __prorl_truth__ = "
                                            "__prorl_plain__ = lambda *a: True\n__prorl_entry__ = None\n"),
    ("AssertionError replaced", "import builtins\nbuiltins.AssertionError = type('E', (Exception,), {})\n" + WRONG),
    ("asserts 'disabled'", "import builtins, os\nbuiltins.__debug__ = False\nos.environ['PYTHONOPTIMIZE'] = '2'\n"
                           + WRONG),
    ("re-exec with -O", "import os, sys\nos.execv(sys.executable, [sys.executable, '-O', '-c', 'pass'])\n" + WRONG),
    ("builtins exec/compile patched", "import builtins\nbuiltins.exec = builtins.eval = lambda *a, **k: None\n"
                                      "builtins.compile = lambda *a, **k: compile('pass', 'x', 'exec')\n" + WRONG),
    ("harness module patched", "import sys\nm = sys.modules['__main__']\nfor k, v in list(vars(m).items()):\n"
                               "    if callable(v) and not k.startswith('__'):\n"
                               "        setattr(m, k, lambda *a, **kw: None)\n" + WRONG),
    ("harness code replaced", "import sys\nfor f in vars(sys.modules['__main__']).values():\n"
                              "    if hasattr(f, '__code__'):\n        f.__code__ = (lambda *a, **k: None).__code__\n"
                              + WRONG),
    ("fake records on stdout", WRONG + "print(json.dumps({'event': 'test', 'i': 0, 'status': 'ok', 'values': [[]]}))\n"
                                       "print('[\"done\", \"0\"]')\n"),
    ("fake records on every descriptor", "import os\n" + WRONG + "for fd in range(0, 64):\n    try:\n"
                                         "        os.write(fd, b'[\"v\",0,[[\"i\",\"3\"]]]\\n[\"done\",\"x\"]\\n')\n"
                                         "    except OSError:\n        pass\n"),
    ("fake records from a thread", "import os, threading, time\n" + WRONG + "def spam():\n    while True:\n"
                                   "        for fd in range(3, 32):\n            try:\n"
                                   "                os.write(fd, b'[\"done\",\"x\"]\\n')\n            except OSError:\n"
                                   "                pass\n        time.sleep(0.001)\n"
                                   "threading.Thread(target=spam, daemon=True).start()\n"),
    ("caller's frames", "import sys\ndef count_vowels(s):\n    f = sys._getframe(1)\n"
                        "    f.f_globals['__prorl_report__'] = lambda *a: None\n    return -1\n"),
    ("frames from a traceback", "def count_vowels(s):\n    try:\n        1 / 0\n    except ZeroDivisionError as e:\n"
                                "        e.__traceback__.tb_frame.f_back.f_locals\n    return -1\n"),
    ("gc walk", "import gc\ndef count_vowels(s):\n    gc.get_objects()\n    return -1\n"),
    ("tracer that skips lines", "import sys\nsys.settrace(lambda *a: None)\n" + WRONG),
    ("process memory", "def count_vowels(s):\n    open('/proc/self/mem', 'rb')\n    return -1\n"),
])
def test_faked_passes_score_zero(name, code):
  res = run(code, VOWELS)
  assert res.reward == 0.0, (name, res)
  # The HumanEval form too (the same program, renamed): nothing passes a check that the function fails.
  he = run(code.replace("count_vowels", "second_largest"), SECOND)
  assert he.reward == 0.0, (name, he)


_FIND_FRAME = {  # ways for the function under test to get a frame from which to walk up to the harness's
    "sys._getframe": "    f = sys._getframe(1)\n",
    "a traceback": ("    try:\n        raise ValueError\n    except ValueError as e:\n"
                    "        f = e.__traceback__.tb_frame\n"),
    "a running generator": "    def up():\n        yield g.gi_frame.f_back\n    g = up()\n    f = next(g)\n",
}


@pytest.mark.parametrize("route", sorted(_FIND_FRAME))
def test_forging_the_completion_record_with_the_harness_nonce(route):
  # With the call stack readable, this writes the harness's own completion record (nonce included) and exits:
  # an assert checked in the sandbox (in a loop) would then pass. The introspection guard is what stops it.
  code = ("import sys, os\ndef count_vowels(s):\n" + _FIND_FRAME[route]
          + "    while f is not None and 'done' not in f.f_locals:\n        f = f.f_back\n"
          "    os.write(f.f_locals['record_fd'], f.f_locals['done'])\n    os._exit(0)\n")
  gt = {"assert_tests": ["for s in ['ab', 'eee']:\n    assert count_vowels(s) == ref(s)"],
        "setup": "def ref(s):\n    return sum(c in 'aeiou' for c in s)"}
  assert run(VOWELS_OK, gt).reward == 1.0
  res = run(code, gt)
  assert res.reward == 0.0 and res.test_status == ("error",), res


def test_always_equal_loses_in_the_sandbox_checked_asserts_too():
  loop = {"assert_tests": ["for s in ['ab', 'eee']:\n    assert count_vowels(s) == ref(s)",
                           "assert abs(count_vowels('ab') - 1) < 1e-9", "assert count_vowels('ab')"],
          "setup": "def ref(s):\n    return sum(c in 'aeiou' for c in s)"}
  assert run(VOWELS_OK, loop).passed == (True, True, True)
  assert run(ALWAYS_EQUAL + "def count_vowels(s):\n    return Anything()\n", loop).passed == (False, False, False)


def test_patched_modules_and_shadowed_builtins_do_not_reach_the_tests():
  gt = {"assert_tests": ["assert math.isclose(half(3), 1.5)", "assert abs(half(5) - 2.5) < 1e-9",
                         "assert sorted(half(x) for x in [4, 2]) == [1.0, 2.0]"], "setup": "import math"}
  wrong = "def half(x):\n    return 100.0\n"
  assert run("def half(x):\n    return x / 2\n", gt).passed == (True, True, True)
  hacks = ("import math\nmath.isclose = lambda *a, **k: True\n"
           "def abs(x):\n    return 0\ndef sorted(*a, **k):\n    return [1.0, 2.0]\n")
  assert run(hacks + wrong, gt).passed == (False, False, False)
  assert run("import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.sorted = lambda *a, **k: [1.0, 2.0]\n" + wrong,
             gt).passed == (False, False, False)


def test_functions_of_the_tests_modules_cannot_be_rewritten():
  gt = {"assert_tests": ["assert re.fullmatch('[0-9]+', digits_of(5))"], "setup": "import re"}
  assert run("def digits_of(n):\n    return str(n)\n", gt).passed == (True,)
  rewrite = ("import re\nfor part, value in (('__code__', (lambda *a, **k: True).__code__), ('__defaults__', (0,)),\n"
             "                     ('__kwdefaults__', {})):\n    try:\n        setattr(re.fullmatch, part, value)\n"
             "    except PermissionError:\n        pass\ndef digits_of(n):\n    return 'five'\n")
  res = run(rewrite, gt)
  assert res.test_status == ("wrong_answer",), res  # ran, unpatched, and failed on its merits


def test_the_expected_values_never_enter_the_sandbox():
  token = f"zebra-{secrets.token_hex(4)}"
  gt = {"assert_tests": [f"assert secret() == {token!r}"]}
  # Looks everywhere it may: its files, the environment, /tmp, its own and its parent's command lines.
  code = ("import os\ndef secret():\n    seen = []\n    for d in ('.', '/tmp'):\n        for n in os.listdir(d):\n"
          "            try:\n                seen.append(open(os.path.join(d, n), errors='replace').read())\n"
          "            except OSError:\n                pass\n    seen.append(repr(dict(os.environ)))\n"
          "    for p in ('self', str(os.getppid())):\n        try:\n"
          "            seen.append(open(f'/proc/{p}/cmdline', errors='replace').read())\n"
          "        except OSError:\n            pass\n    text = ''.join(seen)\n    print(text[:900])\n"
          f"    i = text.find('zebra-')\n    return text[i:i + {len(token)}] if i >= 0 else ''\n")
  res = run(code, gt)
  assert res.reward == 0.0 and token not in res.outputs[0], res


# ---- the harness's own guarantees, checked directly --------------------------------------------------------


def _global_reads(factory):
  """Names the functions built inside `factory` (or `factory` itself, if it builds none) read as globals."""
  import dis  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  codes = [c for c in factory.__code__.co_consts if isinstance(c, types.CodeType)] or [factory.__code__]
  found = set()
  while codes:
    code = codes.pop()
    found |= {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
  return found


def test_code_running_after_the_program_reads_no_globals():
  # A program may rebind builtins and the harness module's globals; what runs after it must not look them up.
  for fn in (harness._judge, harness._make_plain, harness._make_truth, harness._make_dump,
             harness._make_introspection_guard, harness._make_importer, harness._make_namespace_builder):
    assert _global_reads(fn) == set(), fn.__name__


def test_test_code_keeps_its_asserts_under_python_dash_o():
  probe = ("from prorl_jax.rewards import _code_harness as h\n"
           "_, (test,) = h._compile_tests({'setup': '', 'tests': [{'source': 'assert 1 == 2'}]})\n"
           "try:\n    exec(test, {})\n    print('skipped')\nexcept AssertionError:\n    print('raised')\n"
           "exec(compile('assert 1 == 2', 'x', 'exec'), {})\nprint('plain compile skips it')\n")
  out = subprocess.run([sys.executable, "-O", "-c", probe], capture_output=True, text=True, check=True).stdout
  assert out.split() == ["raised", "plain", "compile", "skips", "it"]


def _same(a, b):
  """Equal and of the same types, all the way down."""
  if type(a) is not type(b):
    return False
  if isinstance(a, dict):
    return len(a) == len(b) and all(k in b and _same(v, b[k]) for k, v in a.items())
  if isinstance(a, (list, tuple)):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  return a == b or (a != a and b != b)


@pytest.mark.parametrize("value", [
    None, True, False, 0, -255, 2 ** 100, 1.5, -0.0, float("inf"), float("nan"), 1 + 2j, "", "héllo\n\"\ud800",
    b"\x00\xff", bytearray(b"ab"), ..., range(1, 10, 3), [], [1, [2, (3, "4")]], (1,), {1, 2}, frozenset({"a"}),
    {"a": [1], 2: {"b": None}, (1, 2): frozenset()},
])
def test_plain_values_travel_exactly(value):
  plain, dump = harness._make_plain(), harness._make_dump()
  assert _same(cr.decode_value(json.loads(dump(plain(value)))), value)


def test_plain_reads_subclasses_through_their_builtin_base():
  import collections  # pylint: disable=g-import-not-at-top
  plain = harness._make_plain()

  class Liar(int):
    def __eq__(self, other):
      return True
    __hash__ = int.__hash__

  class Shouty(list):
    def __iter__(self):
      return iter(["boo"])

  assert _same(plain(Liar(3)), 3) and _same(plain(Shouty([1, 2])), [1, 2])
  assert _same(plain(collections.Counter("aab")), {"a": 2, "b": 1})
  assert _same(plain(collections.OrderedDict(x=1)), {"x": 1})
  with pytest.raises(TypeError, match="plain data"):
    plain(object())
  loop = []
  loop.append(loop)
  with pytest.raises(TypeError, match="contains itself"):
    plain(loop)


@pytest.mark.parametrize("tagged", [
    "i", [], ["i"], ["i", 5], ["i", "zz"], ["b", 2], ["q", "1"], ["l", "x"], ["t", [["i", "1"], "x"]],
    ["d", [[["l", []], ["i", "1"]]]],  # an unhashable key
    ["l", [], []],
])
def test_decode_value_rejects_what_the_harness_never_writes(tagged):
  with pytest.raises(ValueError):
    cr.decode_value(tagged)


def test_decode_value_refuses_absurd_nesting():
  deep = ["n"]
  for _ in range(300):
    deep = ["l", [deep]]
  with pytest.raises(ValueError):
    cr.decode_value(deep)


def test_per_test_share_of_the_budget():
  assert harness._test_limit(4.5, 1) == 4.5  # the last test may use all that is left
  assert harness._test_limit(4.5, 3) == pytest.approx(3.5)  # 0.5 s kept for each later test
  assert harness._test_limit(2.0, 10) == pytest.approx(0.2)  # many tests: a fair share each


@pytest.mark.parametrize("gt, field", [
    ({"test": SECOND_TEST}, "'entry_point'"),
    ({"test": "def helper(c):\n    assert c(1)\n", "entry_point": "f"}, "no top-level check"),
    ({"test": "def check(c):\n    assert c(1) ==\n", "entry_point": "f"}, r"'test'\] is not valid Python"),
    ({"test": "", "entry_point": "f"}, "'test'"),
    ({"assert_tests": []}, "'assert_tests'"),
    ({"assert_tests": "assert f(1) == 1"}, "'assert_tests'"),
    ({"assert_tests": ["assert f(1) == 1", "assert f(2) =="]}, r"'assert_tests'\]\[1\] is not valid Python"),
    ({"assert_tests": ["assert f(1) == 1", 3]}, r"'assert_tests'\]\[1\]"),
    ({"assert_tests": ["assert f(1) == 1"], "setup": ["import math"]}, "'setup'"),
    ({"assert_tests": ["assert f(1) == 1"], "setup": "import"}, r"'setup'\] is not valid Python"),
])
def test_malformed_test_programs_name_the_field(gt, field):
  with pytest.raises(ValueError, match=field):
    cr.parse_tests(gt)
  with pytest.raises(ValueError, match=field):
    score("code", fenced(VOWELS_OK), gt)


def test_batch_through_the_reward_manager_pool():
  items = [(SECOND_OK, SECOND, 1.0), ("def second_largest(xs):\n    return max(xs)\n", SECOND, 0.0),
           (VOWELS_OK, VOWELS, 1.0), (VOWELS_LOWER, VOWELS, 2 / 3), (WRONG, VOWELS, 0.0),
           ("def count_vowels(s):\n    while True:\n        pass\n", VOWELS, 0.0)]
  with RewardManager(2, code_timeout_s=BUDGET_S) as rm:
    batch = rm.score_batch(["code"] * len(items), [fenced(c) for c, _, _ in items], [gt for _, gt, _ in items])
  assert batch.counts()["ok"] == len(items)
  assert batch.scores.tolist() == pytest.approx([want for _, _, want in items])


# ---- the nine hostile programs of test_rewards_sandbox.py, as MBPP-form solutions ----------------------------
# Each runs before every statement; the function after it is right only if the hostile part achieved its aim
# (or, for the loops, is never reached), so a reward above 0 would mean the sandbox let it.

HONEST = "def count_vowels(s):\n    return sum(c in 'aeiouAEIOU' for c in s)\n"


def _run_hostile(code, mode, budget=BUDGET_S):
  start = time.monotonic()
  res = run(code, VOWELS, timeout_s=budget, mode=mode)
  assert time.monotonic() - start < budget + 1.0
  assert res.reward == 0.0, res
  assert _sandbox_processes(res.run_uid) == [], "a sandboxed process outlived the call"
  assert _no_workdirs_left()
  return res


@pytest.fixture(params=("auto", "none"))
def mode(request):
  return request.param


@pytest.mark.parametrize("name, code", [
    ("fork bomb", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n" + HONEST),
    ("infinite loop", "while True:\n    pass\n" + HONEST),
    ("memory bomb", "x = []\nwhile True:\n    x.append(bytearray(10 ** 8))\n" + HONEST),
    ("gigabytes of stdout", "import sys\nwhile True:\n    sys.stdout.write('x' * (1 << 20))\n" + HONEST),
    ("gigabytes of stderr", "import sys\nwhile True:\n    sys.stderr.write('x' * (1 << 20))\n" + HONEST),
    ("signalling the parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + HONEST),
    ("background process", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                           "        os.execve('/bin/sleep', ['sleep', '30'], {})\n    os._exit(0)\ntime.sleep(0.2)\n"
                           "def count_vowels(s):\n    return -1\n"),
])
def test_hostile_programs(mode, name, code):
  _run_hostile(code, mode)


def test_hostile_write_to_home_directory(mode):
  target = pathlib.Path.home() / f"prorl_pwned_{secrets.token_hex(6)}"
  try:
    res = _run_hostile(f"open({str(target)!r}, 'w').write('pwned')\n" + HONEST, mode)
    assert not target.exists() and "outside the sandbox" in res.errors[0]
  finally:
    if target.exists():
      target.unlink()


def test_hostile_reading_the_callers_environment(mode, monkeypatch):
  secret = secrets.token_hex(12)
  monkeypatch.setenv("PRORL_TEST_SECRET", secret)
  code = (f"import os\nfound = [v for v in os.environ.values() if v == {secret!r}]\nfor p in os.listdir('/proc'):\n"
          f"    try:\n        found += [1] if {secret!r}.encode() in open(f'/proc/{{p}}/environ', 'rb').read() "
          "else []\n"
          "    except Exception:\n        pass\n"
          "def count_vowels(s):\n    return sum(c in 'aeiouAEIOU' for c in s) if found else -1\n")
  res = _run_hostile(code, mode)
  assert res.test_status == ("wrong_answer",) * 3


def test_hostile_network_connection(mode, listener):  # noqa: F811 -- the fixture imported above
  port = listener.getsockname()[1]
  res = _run_hostile(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n" + HONEST, mode)
  assert "network access" in res.errors[0]
  with pytest.raises(OSError):
    listener.accept()  # nobody connected (the fixture's socket times out)
