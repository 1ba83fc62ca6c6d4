"""pass@k against brute force: the average over every k-subset of the n samples of "some sample in it is solved".

Checks `prorl_jax.algorithms.pass_at_k` for all n <= 8, c <= n, k <= n, and `prorl_jax.evaluation.summarize_group`
on groups of problems (mixed c, partial credit, unequal sample counts), plus `summarize`'s grouping.
"""

import itertools
import math
import random

import numpy as np
import pytest

from prorl_jax.algorithms import pass_at_k
from prorl_jax.evaluation import SOLVED_THRESHOLD, ProblemResult, ks_up_to, summarize, summarize_group


def brute_force_pass_at_k(solved, k):
  """Fraction of the k-subsets of `solved` (a list of bools) that contain a solved sample."""
  subsets = list(itertools.combinations(range(len(solved)), k))
  return sum(any(solved[i] for i in s) for s in subsets) / len(subsets)


def _result(index, scores, benchmark="b", domain="math"):
  return ProblemResult(index=index, id=f"p{index}", benchmark=benchmark, domain=domain, scores=list(scores),
                       lengths=[10 + i for i in range(len(scores))], finished_by_eos=[i % 3 != 0 for i in
                                                                                      range(len(scores))])


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_subset_average(n):
  for c in range(n + 1):
    # Which samples are correct does not matter; a shuffled pattern guards against positional bugs.
    solved = [True] * c + [False] * (n - c)
    random.Random(n * 10 + c).shuffle(solved)
    for k in range(1, n + 1):
      assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(solved, k), abs=1e-12), (n, c, k)


def test_pass_at_k_closed_form_matches_binomials():
  for n, c, k in [(16, 3, 4), (64, 1, 16), (256, 10, 128), (30, 29, 2)]:
    expected = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_summarize_group_matches_brute_force(n):
  rng = random.Random(n)
  results = []
  for index in range(6):
    c = rng.randint(0, n)
    scores = [1.0] * c + [rng.choice([0.0, 0.25, 0.5, 1.0 - 1e-3]) for _ in range(n - c)]  # partial credit
    rng.shuffle(scores)
    results.append(_result(index, scores))
  summary = summarize_group(results)
  assert summary["num_problems"] == 6 and summary["num_samples"] == n
  for k in ks_up_to(n):
    expected = np.mean([brute_force_pass_at_k([s >= 1.0 for s in r.scores], k) for r in results])
    assert summary[f"pass@{k}"] == pytest.approx(expected, abs=1e-12), k  # fully correct, k = 1 included
  assert summary["score@1"] == pytest.approx(np.mean([np.mean(r.scores) for r in results]))  # the mean score
  assert summary["pass@1"] == pytest.approx(np.mean([np.mean([s >= 1.0 for s in r.scores]) for r in results]))
  assert "solved@1" not in summary
  assert summary["mean_length"] == pytest.approx(np.mean([np.mean(r.lengths) for r in results]))
  assert summary["truncated_frac"] == pytest.approx(np.mean([1 - np.mean(r.finished_by_eos) for r in results]))


def test_summarize_group_uses_the_common_sample_count():
  results = [_result(0, [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]), _result(1, [0.0, 1.0, 0.0, 0.0])]
  summary = summarize_group(results)
  assert summary["num_samples"] == 4
  truncated = [[True, False, False, True], [False, True, False, False]]
  for k in (2, 4):
    assert summary[f"pass@{k}"] == pytest.approx(np.mean([brute_force_pass_at_k(s, k) for s in truncated]))
  assert summary["pass@1"] == pytest.approx(np.mean([brute_force_pass_at_k(s, 1) for s in truncated]))
  assert summary["score@1"] == pytest.approx(np.mean([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]]))


def test_solved_threshold_counts_near_full_credit_only():
  assert SOLVED_THRESHOLD < 1.0
  summary = summarize_group([_result(0, [1.0 - 1e-9, 0.999, 0.5, 0.0])])
  assert summary["pass@4"] == pytest.approx(1.0)  # 1 - 1e-9 is full credit
  assert summary["score@1"] == pytest.approx((1.0 - 1e-9 + 0.999 + 0.5) / 4)
  assert summary["pass@1"] == pytest.approx(0.25)


def test_ks_up_to():
  assert ks_up_to(1) == [1]
  assert ks_up_to(8) == [1, 2, 4, 8]
  assert ks_up_to(12) == [1, 2, 4, 8, 12]


def test_summarize_groups_by_benchmark_and_domain():
  results = [_result(0, [1, 0], "aime"), _result(1, [0, 0], "aime"), _result(2, [1, 1], "ifeval", "ifeval")]
  by_bench = summarize(results)
  assert set(by_bench) == {"aime", "ifeval", "all"}
  assert by_bench["aime"]["num_problems"] == 2 and by_bench["all"]["num_problems"] == 3
  assert by_bench["aime"]["pass@2"] == pytest.approx((1.0 + 0.0) / 2)
  by_domain = summarize(results, by="domain")
  assert set(by_domain) == {"math", "ifeval", "all"}
  assert summarize_group([]) == {}
