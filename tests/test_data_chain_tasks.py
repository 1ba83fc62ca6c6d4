"""The chain suite: difficulty = number of steps; references checked by re-doing the arithmetic, scored by the real
math verifier; levels, splits and specs."""

import re

import pytest

from prorl_jax.data import DataError
from prorl_jax.data.chain_tasks import MAX_LEVEL, chain_dataset, parse_levels
from prorl_jax.data.specs import load_spec
from prorl_jax.rewards.math_reward import score_math

_LINE = re.compile(r"^(\d+) ([+-]) (\d) = (\d+)$")


def _terms(prompt):
  body = prompt.removeprefix("Compute ").removesuffix(".")
  tokens = body.split(" ")
  start, ops = int(tokens[0]), list(zip(tokens[1::2], map(int, tokens[2::2])))
  return start, ops


@pytest.mark.parametrize("split", ["train", "validation"])
def test_references_redo_the_prompts_arithmetic_step_by_step(split):
  examples = chain_dataset(240, seed=3, split=split, levels=range(1, MAX_LEVEL + 1))
  assert len(examples) == 240
  for e in examples:
    start, ops = _terms(e.prompt)
    level = e.extra["level"]
    assert len(ops) == level and e.extra["benchmark"] == f"chain/L{level}" and e.domain == "math"
    total = start
    lines = e.extra["reference"].split("\n")
    assert len(lines) == level + 1
    for line, (op, b) in zip(lines, ops):
      x, line_op, line_b, y = _LINE.match(line).groups()
      assert (int(x), line_op, int(line_b)) == (total, op, b)
      total = total + b if op == "+" else total - b
      assert int(y) == total and 0 <= total <= 99
    assert total == int(e.ground_truth) == eval(e.prompt.removeprefix("Compute ").removesuffix("."))  # noqa: S307
    assert lines[-1] == f"\\boxed{{{total}}}"


def test_the_math_verifier_scores_the_reference_and_rejects_a_wrong_total():
  for e in chain_dataset(24, seed=0, levels=(1, 4, 8)):
    assert score_math(e.extra["reference"], e.ground_truth) == 1.0
    wrong = e.extra["reference"].rsplit("\\boxed", 1)[0] + f"\\boxed{{{int(e.ground_truth) + 1}}}"
    assert score_math(wrong, e.ground_truth) == 0.0


def test_levels_are_interleaved_deterministic_and_splits_disjoint():
  a = chain_dataset(30, seed=1, levels=(2, 5, 7))
  assert [e.extra["level"] for e in a[:6]] == [2, 5, 7, 2, 5, 7]
  assert [e.prompt for e in a] == [e.prompt for e in chain_dataset(30, seed=1, levels=(2, 5, 7))]
  assert [e.prompt for e in a] != [e.prompt for e in chain_dataset(30, seed=2, levels=(2, 5, 7))]
  train = {e.prompt for e in chain_dataset(300, levels=(2, 3, 4))}
  validation = {e.prompt for e in chain_dataset(300, split="validation", levels=(2, 3, 4))}
  assert len(train) == 300 and len(validation) == 300 and not train & validation


def test_responses_grow_with_the_level():
  lengths = {lv: sum(len(e.extra["reference"]) for e in chain_dataset(20, levels=(lv,))) / 20 for lv in (1, 4, 8)}
  assert lengths[1] < lengths[4] < lengths[8] and lengths[8] > 60


def test_parse_levels():
  assert parse_levels("1-3") == (1, 2, 3)
  assert parse_levels("1,4,6") == (1, 4, 6)
  assert parse_levels("5-6,1") == (1, 5, 6)
  for bad in ("0-2", "a", f"1-{MAX_LEVEL + 1}", ""):
    with pytest.raises(DataError, match="levels=1-3"):
      parse_levels(bad)


def test_spec_names_levels_and_reports_per_level_benchmarks():
  examples = load_spec("embedded:chain?levels=2-3&size=20", split="validation")
  assert len(examples) == 20 and {e.extra["level"] for e in examples} == {2, 3}
  assert {e.extra["benchmark"] for e in examples} == {"chain/L2", "chain/L3"}
  assert all(e.id.startswith("chain/validation/") for e in examples)
  default = load_spec("embedded:chain")  # 900 training problems, 300 per level 1-3
  assert len(default) == 900 and {e.extra["level"] for e in default} == {1, 2, 3}
  with pytest.raises(DataError, match="chain levels"):
    load_spec("embedded:chain?levels=0")


def test_too_many_problems_for_a_level_is_a_clear_error():
  with pytest.raises(DataError, match=r"chain level 1 has only .* \(ask for at most"):
    chain_dataset(5000, levels=(1,))
  few = chain_dataset(5000, levels=(1, 2), allow_fewer=True)  # the warm-start pool: level 1 gives what it has
  by_level = [sum(e.extra["level"] == lv for e in few) for lv in (1, 2)]
  assert 300 < by_level[0] < 2500 and by_level[1] == 2500
  assert len({e.prompt for e in few}) == len(few)
