"""Tests for prorl_jax.rewards.logic_reward against Reasoning Gym's own generators and scorers."""

import json

import pytest
import reasoning_gym

from prorl_jax.rewards import logic_reward
from prorl_jax.rewards.logic_reward import score_logic

TASKS = ["basic_arithmetic", "chain_sum", "leg_counting", "countdown", "knights_knaves", "word_ladder",
         "gsm_symbolic", "arc_agi", "sudoku", "zebra_puzzles"]


def _entries(task, n=3, seed=7):
  ds = reasoning_gym.create_dataset(task, size=n, seed=seed)
  return ds, [ds[i] for i in range(n)]


@pytest.mark.parametrize("task", TASKS)
def test_dataset_answer_in_answer_tags_scores_one(task):
  ds, entries = _entries(task)
  for entry in entries:
    # The oracle: the dataset instance that generated the entry scores its own answer 1.0.
    assert ds.score_answer(answer=entry["answer"], entry=entry) == 1.0
    response = f"<think>Let me work it out.</think>\nThe result:\n<answer>{entry['answer']}</answer>"
    assert score_logic(response, {"task": task, "entry": entry}) == 1.0
    # After a JSON round trip through a dataset file (tuples become lists), as a whole string or per field.
    assert score_logic(response, json.dumps({"task": task, "entry": entry})) == 1.0
    assert score_logic(response, {"task": task, "entry": json.dumps(entry)}) == 1.0


@pytest.mark.parametrize("task", TASKS)
def test_wrong_answer_matches_the_tasks_own_partial_credit(task):
  ds, entries = _entries(task)
  for entry in entries:
    wrong = "definitely not the answer 123456789"
    expected = ds.score_answer(answer=wrong, entry=entry)
    assert expected < 1.0
    assert score_logic(f"<answer>{wrong}</answer>", {"task": task, "entry": entry}) == pytest.approx(expected)


def test_last_answer_tag_counts():
  _, (entry, *_) = _entries("chain_sum")
  gt = {"task": "chain_sum", "entry": entry}
  right, wrong = entry["answer"], str(int(entry["answer"]) + 1)
  assert score_logic(f"<answer>{wrong}</answer> no wait <answer>{right}</answer>", gt) == 1.0
  assert score_logic(f"<answer>{right}</answer> no wait <answer>{wrong}</answer>", gt) == 0.0
  # An answer only inside the thinking is not an answer; an unclosed <think> is a truncated response.
  assert score_logic(f"<think><answer>{right}</answer></think> I give up.", gt) == 0.0
  assert score_logic(f"<think>so <answer>{right}</answer>", gt) == 0.0


@pytest.mark.parametrize("response", ["", "   ", None, 17, "The answer is 5", "<answer>", "</answer><answer>"])
def test_empty_or_malformed_response_scores_zero(response):
  _, (entry, *_) = _entries("basic_arithmetic")
  assert score_logic(response, {"task": "basic_arithmetic", "entry": entry}) == 0.0


def test_scorer_that_raises_on_the_answer_gives_zero():
  ds, (entry, *_) = _entries("prime_factorization")
  with pytest.raises(ValueError):  # Reasoning Gym's own scorer raises on this answer
    ds.score_answer(answer="zzz", entry=entry)
  assert score_logic("<answer>zzz</answer>", {"task": "prime_factorization", "entry": entry}) == 0.0
  assert score_logic(f"<answer>{entry['answer']}</answer>", {"task": "prime_factorization", "entry": entry}) == 1.0


def test_propositional_logic_scores_validity_not_the_stored_answer():
  """Its stored `answer` is None and scores 0; a valid conclusion (metadata example_answer) scores 1."""
  ds, entries = _entries("propositional_logic", n=4, seed=0)
  for entry in entries:
    gt = {"task": "propositional_logic", "entry": json.loads(json.dumps(entry))}
    example = entry["metadata"]["example_answer"]
    expected = ds.score_answer(answer=example, entry=entry)
    assert expected > 0.0
    assert score_logic(f"<answer>{example}</answer>", gt) == expected
    assert score_logic(f"<answer>{entry['answer']}</answer>", gt) == 0.0
  assert any(score_logic(f"<answer>{e['metadata']['example_answer']}</answer>",
                         {"task": "propositional_logic", "entry": e}) == 1.0 for e in entries)


def test_arc_grids_survive_json_round_trip():
  """arc_agi compares a parsed grid (tuple of tuples) with metadata["output"]; JSON makes lists of it."""
  ds, (entry, *_) = _entries("arc_agi", n=1)
  round_tripped = json.loads(json.dumps(entry))
  assert ds.score_answer(answer=entry["answer"], entry=round_tripped) < 1.0  # the problem being fixed
  assert score_logic(f"<answer>{entry['answer']}</answer>", {"task": "arc_agi", "entry": round_tripped}) == 1.0


def test_scorer_is_built_once_per_task_and_config():
  logic_reward._scorer.cache_clear()
  _, entries = _entries("leg_counting", n=3)
  for entry in entries:
    score_logic(f"<answer>{entry['answer']}</answer>", {"task": "leg_counting", "entry": entry})
  info = logic_reward._scorer.cache_info()
  assert (info.misses, info.hits) == (1, 2)


def test_dataset_config_is_honoured():
  ds = reasoning_gym.create_dataset("chain_sum", size=2, seed=3, min_terms=5, max_terms=6)
  entry = ds[0]
  gt = {"task": "chain_sum", "entry": entry, "config": {"min_terms": 5, "max_terms": 6}}
  assert score_logic(f"<answer>{entry['answer']}</answer>", gt) == 1.0
  with pytest.raises(ValueError, match="'config'"):
    score_logic("<answer>1</answer>", {**gt, "config": {"no_such_option": 1}})


@pytest.mark.parametrize("gt,field", [
    (None, "must be a dict"),
    ("{not json", "not valid JSON"),
    ({"entry": {"answer": "1", "metadata": {}}}, "'task'"),
    ({"task": "no_such_task", "entry": {"answer": "1", "metadata": {}}}, "names no Reasoning Gym task"),
    ({"task": "chain_sum"}, "'entry'"),
    ({"task": "chain_sum", "entry": "{broken"}, "'entry'"),
    ({"task": "chain_sum", "entry": {"question": "1+1"}}, "lacks ['answer', 'metadata']"),
    ({"task": "chain_sum", "entry": {"answer": "2", "metadata": {}}, "config": [1]}, "'config'"),
])
def test_malformed_ground_truth_raises_naming_the_field(gt, field):
  with pytest.raises(ValueError) as info:
    score_logic("<answer>2</answer>", gt)
  assert field in str(info.value)
