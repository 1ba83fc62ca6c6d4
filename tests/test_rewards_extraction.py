"""Tests for prorl_jax.rewards.extraction: think handling, boxed answers, answer tags, fallbacks, choices."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reasoning_gym.utils import extract_answer as rg_extract_answer

from prorl_jax.rewards import extraction as ex


@pytest.mark.parametrize("response,expected", [
    ("plain answer", "plain answer"),
    ("<think>reasoning</think>final", "final"),
    ("reasoning only closed</think>final", "final"),  # template opened <think> in the prompt
    ("<think>a</think>b<think>c</think>d", "d"),
    ("<think>never closed", None),
    ("<think>a</think>b<think>reopened", None),
    ("", ""),
    (None, None),
    (12, None),
])
def test_final_text(response, expected):
  assert ex.final_text(response) == expected


@pytest.mark.parametrize("text,expected", [
    ("so \\boxed{42}.", "42"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}} ok", "\\frac{\\sqrt{3}}{2}"),
    ("first \\boxed{1} then \\boxed{2}", "2"),
    ("\\fbox{7}", "7"),
    ("\\boxed{1} and \\fbox{9}", "9"),
    ("\\boxed {5}", "5"),
    ("$\\boxed 5$", "5"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped set braces
    ("\\boxed{\\boxed{3}}", "3"),
    ("\\boxed{ 4 }", "4"),
    ("\\boxed{1} then truncated \\boxed{2", None),  # unbalanced last box is no answer
    ("no box here", None),
    ("\\boxed", None),
])
def test_last_boxed(text, expected):
  assert ex.last_boxed(text) == expected


def test_all_boxed_in_order():
  assert ex.all_boxed("\\fbox{a} x \\boxed{b{c}} y \\boxed{d") == ["a", "b{c}"]
  assert ex.all_boxed(None) == []


@pytest.mark.parametrize("text", [
    "<answer>42</answer>",
    "x <answer> 1 </answer> y <answer>\n2\n</answer> z",
    "<answer>multi\nline</answer>",
    "no tags",
    "<answer></answer>",
    "<answer>a</answer> <answer>b",
])
def test_answer_tag_agrees_with_reasoning_gym(text):
  assert ex.answer_tag(text) == rg_extract_answer(text)


def test_answer_tag_prefers_innermost_of_nested_tags():
  assert ex.answer_tag("<answer>a <answer>b</answer>") == "b"


@given(st.lists(st.sampled_from(["<answer>", "</answer>", "x", " ", "7", "\n"]), max_size=30))
@settings(max_examples=200, deadline=None)
def test_answer_tag_matches_reasoning_gym_without_nesting(pieces):
  text = "".join(pieces)
  # Agreement is promised when no <answer> opens before a pending one closes (well-formed text).
  depth, nested = 0, False
  for i in range(len(text)):
    if text.startswith("<answer>", i):
      nested |= depth > 0
      depth += 1
    elif text.startswith("</answer>", i) and depth:
      depth -= 1
  if not nested:
    assert ex.answer_tag(text) == rg_extract_answer(text)


@pytest.mark.parametrize("text,expected", [
    ("So the final answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
    ("The answer is 42. Let me double-check.", "42"),
    ("Final Answer: **3.5**", "3.5"),
    ("the answer is: \\(x+1\\)", "x+1"),
    ("The answer is 7.\nActually, the answer is 8.", "8"),
    ("No conclusion.", None),
])
def test_answer_is_fallback(text, expected):
  assert ex.answer_is_fallback(text) == expected


@pytest.mark.parametrize("response,expected", [
    ("the answer is 3 \\boxed{4}", "4"),  # boxed wins over the phrase
    ("<answer>5</answer> the answer is 6", "5"),  # tag wins over the phrase
    ("the answer is 6", "6"),
    ("<think>\\boxed{1}</think>The answer is 2.", "2"),
    ("<think>\\boxed{1}", None),
    ("nothing", None),
    (None, None),
])
def test_extract_math_answer_priority(response, expected):
  assert ex.extract_math_answer(response) == expected


def test_choice_claims_and_extract_choice():
  assert ex.choice_claims("Option A fails. The answer is (B).") == ["B"]
  assert ex.choice_claims("\\boxed{A} then \\boxed{(d)}") == ["A", "D"]
  assert ex.extract_choice("\\boxed{A} then \\boxed{(d)}") is None
  assert ex.extract_choice("Answer: E", choices="ABCD") is None  # E is not an option here
  assert ex.extract_choice("Answer: D", choices="ABCD") == "D"
  with pytest.raises(ValueError, match="choices"):
    ex.extract_choice("Answer: D", choices="abcd")


@pytest.mark.parametrize("degenerate", [
    "\\boxed{" * 40000, "<answer>" * 40000, "The answer is " * 20000, "{" * 200000, "Answer: A " * 20000,
    "Answer: I " * 20000, "\\boxed{C}" * 20000,
])
def test_degenerate_outputs_take_linear_time(degenerate):
  start = time.perf_counter()
  ex.extract_math_answer(degenerate)
  ex.extract_choice(degenerate)
  assert time.perf_counter() - start < 2.0  # quadratic scans take minutes on these
