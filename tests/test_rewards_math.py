"""Tests for prorl_jax.rewards.math_reward: Math-Verify equivalence plus MATH-style normalisation."""

import concurrent.futures
import fractions

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prorl_jax.rewards import math_reward
from prorl_jax.rewards.math_reward import normalize_answer, score_math


@pytest.mark.parametrize("response,gt", [
    ("So the answer is \\boxed{\\frac{1}{2}}.", "0.5"),
    ("\\boxed{0.5}", "\\frac{1}{2}"),
    ("\\boxed{\\dfrac{1}{2}}", "1/2"),
    ("\\boxed{3}", "$x=3$"),
    ("\\boxed{x = 3}", "3"),
    ("\\boxed{3}", "\\boxed{3}"),
    ("\\boxed{3}", 3),
    ("\\boxed{12.0}", "12"),
    ("\\boxed{2\\sqrt{3}}", "\\sqrt{12}"),
    ("\\boxed{(x+1)^2}", "x^2+2x+1"),
    ("\\boxed{\\{2, 1\\}}", "\\{1,2\\}"),
    ("\\boxed{(-\\infty, 2]}", "(-\\infty,2]"),
    ("\\boxed{1,000}", "1000"),
    ("\\boxed{5^\\circ}", "5"),
    ("\\fbox{7}", "7"),
    ("The final answer is $\\frac{3}{4}$.", "0.75"),  # "answer is" fallback
    ("<answer>42</answer>", "42"),
    ("<think>Maybe \\boxed{5}? No.</think>\nThus \\boxed{6}.", "6"),
    ("long reasoning</think> \\boxed{6}", "6"),
    ("\\boxed{\\text{North}}", "north"),  # a text answer: the normalisation's opinion
])
def test_correct_answers_score_one(response, gt):
  assert score_math(response, gt) == 1.0


@pytest.mark.parametrize("response,gt", [
    ("\\boxed{4}", "3"),
    ("\\boxed{\\frac{1}{3}}", "0.5"),
    ("\\boxed{3.14159}", "\\pi"),
    ("\\boxed{1, 2, 5}", "5"),  # a list of candidates is not the answer
    ("\\boxed{5 or 6}", "5"),
    ("\\boxed{[1,2)}", "(1,2]"),
    ("\\boxed{x=4}", "x=3"),
    ("<think>\\boxed{3}</think> so \\boxed{4}", "3"),  # only the text after </think> counts
    ("\\boxed{3} then \\boxed{4}", "3"),  # the last box counts
])
def test_wrong_answers_score_zero(response, gt):
  assert score_math(response, gt) == 0.0


@pytest.mark.parametrize("response", [
    "", "   ", None, 17, ["\\boxed{3}"], "3", "I think it is three", "\\boxed{}", "\\boxed{3",
    "<think>The answer is \\boxed{3}", "\\boxed{\\frac{1}{", "\\boxed{)(}", "\\boxed{" * 1000,
])
def test_empty_or_malformed_response_scores_zero(response):
  assert score_math(response, "3") == 0.0


@pytest.mark.parametrize("gt", [None, "", "   ", "$ $", "\\boxed{}", True, ["3"], {"answer": 3}])
def test_malformed_ground_truth_raises(gt):
  with pytest.raises(ValueError, match="ground_truth"):
    score_math("\\boxed{3}", gt)


@given(a=st.integers(-10**6, 10**6), b=st.integers(-10**6, 10**6))
@settings(max_examples=40, deadline=None)
def test_integers_property(a, b):
  assert score_math(f"\\boxed{{{a}}}", str(b)) == float(a == b)


@given(p=st.integers(-50, 50), q=st.integers(1, 50))
@settings(max_examples=30, deadline=None)
def test_fraction_equals_its_decimal_when_terminating(p, q):
  frac = fractions.Fraction(p, q)
  decimal = p / q
  if frac.denominator in (1, 2, 4, 5, 8, 10, 16, 20, 25, 40, 50):  # exact short decimals
    assert score_math(f"\\boxed{{\\frac{{{p}}}{{{q}}}}}", repr(decimal)) == 1.0
  assert score_math(f"\\boxed{{\\frac{{{p}}}{{{q}}}}}", str(frac + 1)) == 0.0


def test_safe_in_threads():
  """math-verify's default signal.alarm timeouts refuse non-main threads; ours are disabled."""
  math_reward._parse.cache_clear()
  jobs = [(f"\\boxed{{\\frac{{{i}}}{{{i + 1}}}}}", f"{i}/{i + 1}") for i in range(1, 9)]
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    results = list(pool.map(lambda job: score_math(*job), jobs))
  assert results == [1.0] * len(jobs)


def test_second_opinion_catches_what_math_verify_misses(monkeypatch):
  monkeypatch.setattr(math_reward, "_math_verify_equal", lambda gold, pred: False)
  assert score_math("\\boxed{\\dfrac12}", "0.5") == 1.0
  assert score_math("\\boxed{k = 7}", "7") == 1.0
  assert score_math("\\boxed{4}", "7") == 0.0


def test_overlong_answer_skips_the_parser():
  long_answer = "+".join(["1"] * 600)  # 1199 characters
  assert len(long_answer) > math_reward.MAX_ANSWER_CHARS
  assert score_math(f"\\boxed{{{long_answer}}}", "600") == 0.0
  assert score_math(f"\\boxed{{{long_answer}}}", long_answer) == 1.0  # identical strings still match
  assert score_math("\\boxed{" + "+".join(["1"] * 6) + "}", "6") == 1.0


def test_math_verify_crash_is_a_wrong_answer(monkeypatch):
  def boom(gold, pred):
    raise RuntimeError("parser bug")
  monkeypatch.setattr(math_reward, "_math_verify_equal", boom)
  assert score_math("\\boxed{8}", "9") == 0.0
  assert score_math("\\boxed{9}", "9") == 1.0  # the string opinion still applies


@pytest.mark.parametrize("raw,expected", [
    # Expected values worked out by hand from Hendrycks' _strip_string rules.
    ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ("\\tfrac12", "\\frac{1}{2}"),
    ("\\frac1{2}", "\\frac{1}{2}"),
    ("0.5", "\\frac{1}{2}"),
    (".5", "\\frac{1}{2}"),
    ("3/4", "\\frac{3}{4}"),
    ("x/4", "x/4"),
    ("k = 7", "7"),
    ("speed = 7", "speed=7"),
    ("10\\%", "10"),
    ("90^\\circ", "90"),
    ("90^{\\circ}", "90"),
    ("\\$5", "5"),
    ("5 \\text{ cm}", "5"),
    ("\\sqrt2", "\\sqrt{2}"),
    ("\\left( 1, 2 \\right)", "(1,2)"),
    ("\\text{Monday}", "monday"),
    ("x^2 + 1", "x^2+1"),
])
def test_normalize_answer(raw, expected):
  assert normalize_answer(raw) == expected
