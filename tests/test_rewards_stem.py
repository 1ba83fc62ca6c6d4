"""Tests for prorl_jax.rewards.stem_reward: multiple-choice letters A-J, binary, ambiguity -> 0."""

import pytest

from prorl_jax.rewards.stem_reward import CHOICES, parse_choice_ground_truth, score_stem


@pytest.mark.parametrize("response", [
    "\\boxed{C}",
    "The final answer is $\\boxed{C}$.",
    "\\boxed{(C)}",
    "\\boxed{\\text{C}}",
    "\\boxed{c}",
    "\\boxed{C. 42 m/s}",
    "Answer: C",
    "**Answer:** C",
    "**Answer: C**",
    "The answer is (C).",
    "The correct answer is C because the field cancels.",
    "the correct option is **C**",
    "Final Answer: The final answer is C. I hope it is correct.",
    "Option A is wrong and option B ignores friction.\n\n**C**",
    "(C)",
    "C",
    "<answer>C</answer>",
    "<think>Is it A? Answer: A. No...</think>\n\nThe answer is C.",
    "thinking about A and B</think>Answer: C",
    "The answer is C.\n\n\\boxed{C}",  # the same letter twice is not ambiguous
])
def test_correct_claims_score_one(response):
  assert score_stem(response, "C") == 1.0


@pytest.mark.parametrize("response", [
    "\\boxed{B}",
    "Answer: D",
    "The answer is (A).",
    "\\boxed{42}",
])
def test_wrong_claims_score_zero(response):
  assert score_stem(response, "C") == 0.0


@pytest.mark.parametrize("response", [
    "\\boxed{A} \\boxed{C}",  # listing options
    "The answer is C. \\boxed{B}",
    "Answer: C\nAnswer: D",
    "<answer>C</answer> The answer is A.",
])
def test_ambiguous_claims_score_zero(response):
  assert score_stem(response, "C") == 0.0


@pytest.mark.parametrize("response", [
    "", "   ", None, 3, "I am not sure.", "Option C looks plausible.", "The answer is I think C",
    "<think>The answer is C", "<think>x</think>", "answer: c",
])
def test_empty_malformed_or_uncommitted_scores_zero(response):
  assert score_stem(response, "C") == 0.0


def test_option_letters_up_to_j_and_the_pronoun_i():
  assert score_stem("The answer is J.", "J") == 1.0
  assert score_stem("\\boxed{I}", "I") == 1.0
  assert score_stem("The answer is I.", "I") == 1.0
  assert score_stem("The answer is I think B.", "I") == 0.0  # "I think" is a pronoun, B is not claimed
  assert score_stem("\\boxed{K}", "A") == 0.0  # K is not an option


@pytest.mark.parametrize("gt", ["C", "c", "(C)", "C)", "C.", " C ", "\\boxed{C}", "$C$", "\\text{C}"])
def test_ground_truth_spellings(gt):
  assert parse_choice_ground_truth(gt) == "C"
  assert score_stem("Answer: C", gt) == 1.0


@pytest.mark.parametrize("gt", [None, 3, "", "CD", "K", "42", "\\frac{1}{2}", ["C"]])
def test_malformed_ground_truth_raises(gt):
  with pytest.raises(ValueError, match="ground_truth"):
    score_stem("Answer: C", gt)


def test_choices_cover_mmlu_pro():
  assert CHOICES == "ABCDEFGHIJ"
