"""Code reward: extraction, ground-truth parsing, output checkers (vs numpy/PRIME semantics), end-to-end scores."""

import json

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from prorl_jax.rewards import code_reward as cr

ADD = {"inputs": [f"{i} {i + 1}\n" for i in range(10)], "outputs": [f"{2 * i + 1}\n" for i in range(10)]}


def fenced(code, tag="python"):
  return f"Here is my solution.\n```{tag}\n{code}\n```\nDone."


# ---------------------------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize("response, expected", [
    (fenced("print(1)"), "print(1)"),
    (fenced("print(1)", tag=""), "print(1)"),
    (fenced("print(1)", tag="py"), "print(1)"),
    (fenced("print(1)", tag="Python3"), "print(1)"),
    (fenced("print(1)") + fenced("print(2)"), "print(2)"),  # the last block wins
    (fenced("print(1)") + fenced("int main() {}", tag="cpp"), "print(1)"),  # non-Python blocks are skipped
    ("<think>```python\nprint(0)\n```</think>" + fenced("print(3)"), "print(3)"),
    ("reasoning without an opening tag</think>" + fenced("print(4)"), "print(4)"),
    ("<think>```python\nprint(0)\n```</think>no code after thinking", None),
    ("<think>still thinking ```python\nprint(0)\n```", None),  # never closed: no answer yet
    (fenced("print('<think>')"), "print('<think>')"),
    ("```python\nprint(5)\n", None),  # unterminated fence (truncated response)
    (fenced("   \n  "), None),
    ("", None),
    ("no code at all", None),
    (None, None),
])
def test_extract_code(response, expected):
  assert cr.extract_code(response) == expected


@hypothesis.given(st.text(alphabet=st.characters(blacklist_characters="`\r", blacklist_categories=("Cs",)),
                          min_size=1).filter(lambda s: s.strip() and "</think>" not in s))
@hypothesis.settings(max_examples=200, deadline=None)
def test_extract_code_round_trip(code):
  assert cr.extract_code(f"blah\n```python\n{code}\n```\n") == code.rstrip()


# ---------------------------------------------------------------------------------------------------- ground truth


def test_parse_tests_accepts_dict_and_json_string():
  a, b = cr.parse_tests(ADD), cr.parse_tests(json.dumps(ADD))
  assert a == b and a.fn_name is None and len(a.inputs) == 10


def test_parse_tests_call_based_forms():
  taco = cr.parse_tests({"fn_name": "f", "inputs": [[1, [2, 3]]], "outputs": [[6]]})
  prime = cr.parse_tests({"fn_name": "f", "inputs": ["1\n[2, 3]"], "outputs": ["6"]})
  assert taco.inputs == prime.inputs == ([1, [2, 3]],)
  assert taco.outputs == ([6],) and prime.outputs == (6,)
  lines = cr.parse_tests({"inputs": [["1 2", "3"]], "outputs": [["3", "4"]]})
  assert lines.inputs == ("1 2\n3",) and lines.outputs == ("3\n4",)


@pytest.mark.parametrize("gt, field", [
    (["not", "a", "dict"], "dict"),
    ("{not json", "JSON"),
    ({"outputs": ["1"]}, "'inputs'"),
    ({"inputs": [], "outputs": []}, "'inputs'"),
    ({"inputs": ["1"], "outputs": ["1", "2"]}, "'outputs'"),
    ({"inputs": ["1"]}, "'outputs'"),
    ({"inputs": [1], "outputs": ["1"]}, r"'inputs'\]\[0\]"),
    ({"fn_name": "not an identifier", "inputs": [[1]], "outputs": [1]}, "'fn_name'"),
    ({"fn_name": "f", "inputs": [5], "outputs": [1]}, r"'inputs'\]\[0\]"),
    ({"fn_name": "f", "inputs": ["{bad"], "outputs": [1]}, r"'inputs'\]\[0\]"),
    ({"fn_name": "f", "inputs": [[{1, 2}]], "outputs": [1]}, "JSON-serialisable"),
])
def test_parse_tests_errors_name_the_field(gt, field):
  with pytest.raises(ValueError, match=field):
    cr.parse_tests(gt)


def test_score_code_raises_for_malformed_ground_truth_even_with_bad_response():
  with pytest.raises(ValueError, match="inputs"):
    cr.score_code("", {"outputs": ["1"]})


# ---------------------------------------------------------------------------------------------------- checkers


@pytest.mark.parametrize("out, exp, ok", [
    ("3\n", "3", True), ("3  \n\n\n", "3\n", True), ("1 2 3\n4\n", "1 2 3\n4", True),
    ("  3\n", "3", True), ("a\n\nb\n", "a\nb\n", True),  # PRIME's stripped, blank-free line comparison
    ("3\r\n", "3\n", True), ("4\n", "3\n", False), ("3 4\n", "3\n4\n", False), ("", "3", False),
    ("1 2 3", "3 2 1", False),  # PRIME's token-set fallback would accept this permutation; we do not
    ("0.3333333", "0.33333333", True), ("1.0", "1", True), ("2.50000", "2.5", True),
    ("1000000", "1000001", False),  # integers compare exactly (PRIME's all-int rule)
    ("1e-9", "0", True), ("0.1", "0.2", False), ("nan", "nan", True), ("inf", "1e308", False),
    ("YES", "yes", False), ("1_000.0", "1000.0", False),
])
def test_stdout_matches(out, exp, ok):
  assert cr.stdout_matches(out, exp) is ok


@hypothesis.given(st.floats(-1e6, 1e6, allow_nan=False), st.floats(-1e-3, 1e-3, allow_nan=False))
@hypothesis.settings(max_examples=300, deadline=None)
def test_float_tolerance_matches_numpy_isclose(b, delta):
  a = b * (1 + delta)
  sa, sb = repr(float(a)), repr(float(b))
  reference = bool(np.isclose(float(sa), float(sb), rtol=1e-5, atol=1e-8))  # PRIME uses np.allclose defaults
  assert cr.stdout_matches(f"{sa}\n", f"{sb}\n") == reference


@pytest.mark.parametrize("value, expected, ok", [
    (3, 3, True), (3, [3], True), ([1, 2], [[1, 2]], True), ([1, 2], [1, 2], True), ([1, 2], [2, 1], False),
    (True, 1, True), ("a", ["a"], True), (None, [None], True), (3, [3, 3], False), ({"1": 2}, {"1": 2}, True),
])
def test_return_matches(value, expected, ok):
  assert cr.return_matches(value, expected) is ok


# ---------------------------------------------------------------------------------------------------- end to end


def test_correct_wrong_partial_and_malformed_responses():
  assert cr.score_code(fenced("a, b = map(int, input().split())\nprint(a + b)"), ADD) == 1.0
  assert cr.score_code(fenced("a, b = map(int, input().split())\nprint(a - b)"), ADD) == 0.0
  partial = "a, b = map(int, input().split())\nprint(a + b if a < 3 else 0)"
  assert cr.score_code(fenced(partial), ADD) == pytest.approx(0.3)
  assert cr.score_code(fenced("a, b = map(int input().split())"), ADD) == 0.0  # syntax error
  assert cr.score_code("", ADD) == 0.0
  assert cr.score_code("The answer is 3.", ADD) == 0.0
  assert cr.score_code(fenced("int main() { return 0; }", tag="cpp"), ADD) == 0.0
  assert cr.score_code(fenced("raise RuntimeError('boom')"), ADD) == 0.0
  assert cr.score_code(fenced("a, b = map(int, input().split())\nprint(a + b)"), json.dumps(ADD)) == 1.0


@pytest.mark.parametrize("reader", [
    "a, b = map(int, input().split())",
    "import sys\na, b = map(int, sys.stdin.readline().split())",
    "import sys\na, b = map(int, sys.stdin.read().split())",
    "import sys\na, b = map(int, sys.stdin.buffer.read().split())",
    "a, b = map(int, open(0).read().split())",
    "import os\na, b = map(int, os.read(0, 100).split())",
])
def test_every_common_way_of_reading_stdin(reader):
  res = cr.run_tests(reader + "\nprint(a + b)", cr.parse_tests(ADD))
  assert res.reward == 1.0, res.errors[0]


def test_program_shapes_found_in_the_wild():
  main_guard = "def main():\n  a, b = map(int, input().split())\n  print(a + b)\nif __name__ == '__main__':\n  main()"
  threaded = ("import threading, sys\nsys.setrecursionlimit(10**6)\nthreading.stack_size(2**26)\n"
              "def main():\n  a, b = map(int, input().split())\n  print(a + b)\nthreading.Thread(target=main).start()")
  exits = "a, b = map(int, input().split())\nprint(a + b)\nexit(0)\nprint('unreachable')"
  no_newline = "a, b = map(int, input().split())\nprint(a + b, end='   ')"
  prelude = "x: List[int] = list(map(int, input().split()))\nprint(pow(sum(x), 1, 10**9))"  # PRIME's prelude
  for code in (main_guard, threaded, exits, no_newline, prelude):
    res = cr.run_tests(code, cr.parse_tests(ADD))
    assert res.reward == 1.0, (code, res.errors)


def test_tests_are_isolated_from_each_other():
  code = "import sys\nseen = globals().setdefault('seen', [])\nseen.append(1)\nsys.modules.setdefault('x', 0)\n" \
         "print(len(seen))"
  res = cr.run_tests(code, cr.CodeTests(("",) * 3, ("1",) * 3))
  assert res.passed == (True, True, True)


def test_all_tests_run_without_early_stop():
  code = "a, b = map(int, input().split())\nprint(a + b if a % 2 else 'wrong')"
  res = cr.run_tests(code, cr.parse_tests(ADD))
  assert res.passed == tuple(i % 2 == 1 for i in range(10)) and res.reward == 0.5
  assert res.test_status.count("wrong_answer") == 5


def test_whole_run_over_budget_scores_zero():
  code = "import time\ntime.sleep(0.5)\na, b = map(int, input().split())\nprint(a + b)"
  tests = cr.CodeTests(tuple(ADD["inputs"][:5]), tuple(ADD["outputs"][:5]))
  assert cr.run_tests(code, tests, timeout_s=1.5).status == "timeout"
  assert cr.run_tests(code, tests, timeout_s=1.5).reward == 0.0
  assert cr.run_tests(code, tests, timeout_s=6.0).reward == 1.0


CALL = {"fn_name": "add", "inputs": [[1, 2], [3, 4], [5, 0]], "outputs": [[3], [7], [5]]}


@pytest.mark.parametrize("code, reward", [
    ("def add(a, b):\n  return a + b", 1.0),
    ("class Solution:\n  def add(self, a: int, b: int) -> int:\n    return a + b", 1.0),
    ("class Solution:\n  def add(self, a, b):\n    return a - b", 1 / 3),
    ("def add(a, b):\n  return (a + b,)", 1.0),  # a tuple is the wrapped list after JSON
    ("def add(a, b):\n  return {a + b}", 0.0),  # a set is not JSON: the test fails, nothing crashes
    ("def other(a, b):\n  return a + b", 1.0),  # PRIME's prelude does `from operator import *`: add exists!
    ("def add(a, b):\n  raise ValueError", 0.0),
    ("def add(a, b):\n  print('noise')\n  return a + b\nprint('top-level noise')", 1.0),
    ("def add(a, b):\n  return a + b\nif __name__ == '__main__':\n  input()", 1.0),  # not run as a script
])
def test_call_based(code, reward):
  assert cr.run_tests(code, cr.parse_tests(CALL)).reward == pytest.approx(reward)


def test_call_based_missing_function():
  gt = {"fn_name": "plus", "inputs": [[1, 2]], "outputs": [[3]]}
  res = cr.run_tests("def other(a, b):\n  return a + b", cr.parse_tests(gt))
  assert res.reward == 0.0 and "plus" in res.errors[0]


def test_call_based_prime_encoding_and_typing_prelude():
  gt = {"fn_name": "twoSum", "inputs": ["[2, 7, 11, 15]\n9", "[3, 2, 4]\n6"], "outputs": ["[0, 1]", "[1, 2]"]}
  code = ("class Solution:\n  def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
          "    seen = {}\n    for i, x in enumerate(nums):\n      if target - x in seen:\n"
          "        return [seen[target - x], i]\n      seen[x] = i")
  assert cr.score_code(fenced(code), json.dumps(gt)) == 1.0


def test_call_based_int_keys_restored_like_prime():
  gt = {"fn_name": "f", "inputs": [[{"1": "a", "2": "b"}]], "outputs": [[3]]}
  assert cr.run_tests("def f(d):\n  return sum(d)", cr.parse_tests(gt)).reward == 1.0


def test_results_report_isolation_and_per_test_details():
  res = cr.run_tests("print(int(input().split()[0]) * 2 + 1)", cr.parse_tests(ADD))
  assert res.status == "ok" and res.reward == 1.0 and len(res.outputs) == 10 and res.outputs[0] == "1\n"
  assert isinstance(res.isolation, tuple) and res.elapsed_s > 0


def test_writing_through_dev_stdout_and_tempfiles():
  code = ("import tempfile\na, b = map(int, input().split())\nwith tempfile.TemporaryFile() as f:\n"
          "  f.write(str(a + b).encode())\n  f.seek(0)\n  s = f.read().decode()\n"
          "with open('/dev/stdout', 'w') as out:\n  out.write(s + '\\n')\n")
  assert cr.run_tests(code, cr.parse_tests(ADD)).reward == 1.0


def test_numpy_is_importable_in_solutions():
  code = "import numpy as np\na, b = map(int, input().split())\nprint(int(np.add(a, b)))"
  assert cr.run_tests(code, cr.parse_tests(ADD), timeout_s=10.0).reward == 1.0
