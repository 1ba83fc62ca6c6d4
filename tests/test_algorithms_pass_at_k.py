"""Unbiased pass@k vs the exact binomial formula (rational arithmetic)."""

from fractions import Fraction
from math import comb

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from prorl_jax import algorithms as A


def exact(n, c, k):
  return float(1 - Fraction(comb(n - c, k), comb(n, k)))


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n),
                                                                    st.integers(1, n))))
def test_matches_exact_binomial(nck):
  n, c, k = nck
  assert A.pass_at_k(n, c, k) == pytest.approx(exact(n, c, k), rel=1e-12, abs=1e-12)


def test_known_values_and_edges():
  assert A.pass_at_k(10, 0, 5) == 0.0
  assert A.pass_at_k(10, 10, 1) == 1.0
  assert A.pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the accuracy
  assert A.pass_at_k(10, 3, 8) == 1.0  # n - c < k
  assert A.pass_at_k(256, 1, 128) == pytest.approx(0.5)
  # Large n where C(n, k) overflows float64 (C(2000, 1000) ~ 1e600): still exact to rounding.
  assert A.pass_at_k(2000, 3, 1000) == pytest.approx(exact(2000, 3, 1000), rel=1e-12)


def test_mean_over_problems():
  got = A.mean_pass_at_k(16, np.array([0, 4, 16]), 4)
  assert got == pytest.approx(np.mean([exact(16, 0, 4), exact(16, 4, 4), exact(16, 16, 4)]))
  got = A.mean_pass_at_k(np.array([8, 16]), np.array([2, 4]), 2)
  assert got == pytest.approx((exact(8, 2, 2) + exact(16, 4, 2)) / 2)


@pytest.mark.parametrize("args,field", [((0, 0, 1), "`n`"), ((5, 6, 1), "`c`"), ((5, 2, 6), "`k`"),
                                        ((5, 2, 0), "`k`"), ((5.0, 2, 1), "`n`")])
def test_bad_inputs(args, field):
  with pytest.raises(ValueError, match=field):
    A.pass_at_k(*args)
