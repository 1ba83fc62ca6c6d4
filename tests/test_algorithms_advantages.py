"""Advantage estimators vs independent float64 numpy references written from ALGORITHMS.md section 4."""

from collections import defaultdict

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from absl.testing import parameterized

from prorl_jax import algorithms as A

_TOL = dict(rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# numpy references (loops and dicts, straight from the formulas)


def _groups_of(gids, live):
  groups = defaultdict(list)
  for i, g in enumerate(gids):
    if live[i]:
      groups[g].append(i)
  return groups


def np_rfpp_baseline(scores, gids, mask, unbiased=True, live=None):
  scores = np.asarray(scores, np.float64)
  live = np.ones(len(scores), bool) if live is None else np.asarray(live, bool)
  groups = _groups_of(gids, live)
  c = np.zeros(len(scores))
  for members in groups.values():
    base = 0.0 if len(members) == 1 else np.mean(scores[members])
    for i in members:
      c[i] = scores[i] - base
  m = np.asarray(mask, np.float64) * live[:, None]
  big_c = c[:, None] * m
  n = m.sum()
  if unbiased:  # verl masked_whiten: masked_mean has + 1e-8 in the denominator, Bessel N / (N - 1)
    mu = (big_c * m).sum() / (n + 1e-8)
    var = ((big_c - mu) ** 2 * m).sum() / (n + 1e-8) * n / (n - 1)
    return (big_c - mu) / np.sqrt(var + 1e-8) * m
  mu = (big_c * m).sum() / n
  var = ((big_c - mu) ** 2 * m).sum() / n
  return (big_c - mu) / np.sqrt(max(var, 1e-8)) * m


def np_grpo(scores, gids, mask, eps=1e-6, scale=True, live=None):
  scores = np.asarray(scores, np.float64)
  live = np.ones(len(scores), bool) if live is None else np.asarray(live, bool)
  adv = np.zeros(len(scores))
  for members in _groups_of(gids, live).values():
    vals = scores[members]
    mean, std = (0.0, 1.0) if len(members) == 1 else (vals.mean(), vals.std(ddof=1))
    for i in members:
      adv[i] = (scores[i] - mean) / (std + eps) if scale else scores[i] - mean
  return adv[:, None] * np.asarray(mask, np.float64)


def np_rloo(scores, gids, mask, live=None):
  scores = np.asarray(scores, np.float64)
  live = np.ones(len(scores), bool) if live is None else np.asarray(live, bool)
  adv = np.zeros(len(scores))
  for members in _groups_of(gids, live).values():
    for i in members:
      others = [j for j in members if j != i]
      adv[i] = scores[i] - (np.mean(scores[others]) if others else 0.0)
  return adv[:, None] * np.asarray(mask, np.float64)


def np_returns(r, m, gamma):
  r, m = np.asarray(r, np.float64), np.asarray(m, np.float64)
  out = np.zeros_like(r)
  for b in range(r.shape[0]):
    run = 0.0
    for t in reversed(range(r.shape[1])):
      new = r[b, t] + gamma * run
      out[b, t] = new * m[b, t]
      run = new if m[b, t] else run  # masked spans carry the return through unchanged
  return out


def np_whiten(v, m):
  n = m.sum()
  mu = (v * m).sum() / (n + 1e-8)
  var = ((v - mu) ** 2 * m).sum() / (n + 1e-8) * n / (n - 1)
  return (v - mu) / np.sqrt(var + 1e-8)


def make_batch(seed, sizes=(4, 4, 4, 1, 4, 1, 3), t=9, labels=None):
  """Groups of given sizes, one all-equal group, interleaved; labels default to dense 0..G-1."""
  rng = np.random.default_rng(seed)
  labels = np.arange(len(sizes)) if labels is None else np.asarray(labels)
  gids = np.concatenate([[lab] * s for lab, s in zip(labels, sizes)])
  scores = rng.integers(0, 2, len(gids)).astype(np.float32)
  scores[gids == labels[2]] = 1.0  # all-equal group
  scores[gids == labels[4]] = rng.uniform(-1, 1, sizes[4])  # continuous scores
  perm = rng.permutation(len(gids))
  gids, scores = gids[perm], scores[perm]
  lengths = rng.integers(1, t + 1, len(gids))
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
  return scores, gids.astype(np.int32), mask


class AdvantagesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0, 1, 2)
  def test_rfpp_baseline_matches_numpy(self, seed):
    scores, gids, mask = make_batch(seed)
    for unbiased in (True, False):
      fn = self.variant(lambda s, g, m, u=unbiased: A.reinforce_pp_baseline_advantages(s, g, m, unbiased=u))
      got = fn(scores, gids, mask)
      chex.assert_shape(got, mask.shape)
      np.testing.assert_allclose(got, np_rfpp_baseline(scores, gids, mask, unbiased), **_TOL)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0, 1, 2)
  def test_grpo_and_drgrpo_match_numpy(self, seed):
    scores, gids, mask = make_batch(seed)
    got = self.variant(A.grpo_advantages)(scores, gids, mask)
    np.testing.assert_allclose(got, np_grpo(scores, gids, mask), **_TOL)
    got = self.variant(lambda s, g, m: A.grpo_advantages(s, g, m, scale_by_std=False))(scores, gids, mask)
    np.testing.assert_allclose(got, np_grpo(scores, gids, mask, scale=False), **_TOL)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0, 1, 2)
  def test_rloo_matches_numpy(self, seed):
    scores, gids, mask = make_batch(seed)
    np.testing.assert_allclose(self.variant(A.rloo_advantages)(scores, gids, mask), np_rloo(scores, gids, mask),
                               **_TOL)

  @chex.variants(with_jit=True, without_jit=True)
  def test_reinforce_pp_matches_numpy_with_multiturn_gaps(self):
    rng = np.random.default_rng(3)
    r = rng.normal(size=(5, 11)).astype(np.float32)
    m = (rng.uniform(size=(5, 11)) > 0.3).astype(np.float32)  # interior gaps: observation spans
    m[:, 0] = 1.0
    for gamma in (1.0, 0.9):
      ret = self.variant(lambda r, m, g=gamma: A.discounted_returns(r, m, g))(r, m)
      np.testing.assert_allclose(ret, np_returns(r, m, gamma), **_TOL)
      adv = self.variant(lambda r, m, g=gamma: A.reinforce_pp_advantages(r, m, g))(r, m)
      np.testing.assert_allclose(adv, np_whiten(np_returns(r, m, gamma), m) * m, **_TOL)

  @chex.variants(with_jit=True, without_jit=True)
  def test_sample_mask_drops_dead_samples_from_every_statistic(self):
    scores, gids, mask = make_batch(4)
    live = np.ones(len(scores), bool)
    live[[0, 5, 9]] = False
    garbage = scores.copy()
    garbage[~live] = np.array([1e6, np.nan, -np.inf], np.float32)
    for fn, ref in ((A.reinforce_pp_baseline_advantages, np_rfpp_baseline), (A.grpo_advantages, np_grpo),
                    (A.rloo_advantages, np_rloo)):
      got = self.variant(lambda s, g, m, w, f=fn: f(s, g, m, sample_mask=w))(garbage, gids, mask, live)
      np.testing.assert_allclose(got, ref(scores, gids, mask, live=live), **_TOL)
      self.assertTrue(np.all(np.asarray(got)[~live] == 0.0))

  @chex.variants(with_jit=True, without_jit=True)
  def test_dead_padding_may_carry_any_id(self):
    scores, gids, mask = make_batch(12)
    live = np.ones(len(scores), bool)
    live[-3:] = False
    padded = gids.copy()
    padded[-3:] = -1  # typical static-shape padding
    for fn in (A.reinforce_pp_baseline_advantages, A.grpo_advantages, A.rloo_advantages):
      got = self.variant(lambda s, g, m, w, f=fn: f(s, g, m, sample_mask=w))(scores, padded, mask, live)
      np.testing.assert_allclose(got, fn(scores, gids, mask, sample_mask=live), rtol=1e-6, atol=1e-6)
    keep = self.variant(lambda s, g, w: A.dynamic_sampling_keep(s, g, sample_mask=w))(scores, padded, live)
    np.testing.assert_array_equal(keep, A.dynamic_sampling_keep(scores, gids, sample_mask=live))

  def test_arbitrary_labels_eager_equal_dense_labels(self):
    labels = [907, 3, 10_000_000, 42, 5, 77, 12]
    scores, gids, mask = make_batch(5, labels=labels)
    _, dense = np.unique(gids, return_inverse=True)
    for fn in (A.reinforce_pp_baseline_advantages, A.grpo_advantages, A.rloo_advantages):
      np.testing.assert_allclose(fn(scores, gids, mask), fn(scores, dense.astype(np.int32), mask), rtol=1e-6,
                                 atol=1e-6)

  def test_num_groups_under_jit(self):
    scores, gids, mask = make_batch(6)
    fn = jax.jit(lambda s, g, m: A.grpo_advantages(s, g, m, num_groups=7))
    np.testing.assert_allclose(fn(scores, gids, mask), np_grpo(scores, gids, mask), **_TOL)

  def test_out_of_range_ids(self):
    scores, gids, mask = make_batch(7)
    bad = gids.copy()
    bad[0] = len(gids) + 3
    got = np.asarray(jax.jit(A.grpo_advantages)(scores, bad, mask))
    self.assertTrue(np.all(np.isnan(got[0])))  # visible, not silently wrong
    self.assertFalse(np.any(np.isnan(got[1:])))
    with self.assertRaisesRegex(ValueError, "num_groups"):
      A.grpo_advantages(scores, gids, mask, num_groups=2)
    with self.assertRaisesRegex(ValueError, "non-negative"):
      A.grpo_advantages(scores, -np.ones_like(gids), mask)

  def test_bad_inputs_name_the_field(self):
    scores, gids, mask = make_batch(8)
    with self.assertRaisesRegex(ValueError, "response_mask"):
      A.grpo_advantages(scores, gids, mask[:-1])
    with self.assertRaisesRegex(ValueError, "group_ids"):
      A.rloo_advantages(scores, gids.astype(np.float32), mask)
    with self.assertRaisesRegex(ValueError, "rewards"):
      A.reinforce_pp_baseline_advantages(scores[:, None], gids, mask)
    with self.assertRaisesRegex(ValueError, "sample_mask"):
      A.grpo_advantages(scores, gids, mask, sample_mask=np.ones(3))
    with self.assertRaisesRegex(ValueError, "Unknown advantage estimator"):
      A.compute_advantages("ppo", scores, gids, mask)

  def test_outcome_to_token_rewards_and_dispatch(self):
    scores, gids, mask = make_batch(9)
    tok = np.asarray(A.outcome_to_token_rewards(scores, mask))
    last = mask.sum(1).astype(int) - 1
    expected = np.zeros_like(mask)
    expected[np.arange(len(scores)), last] = scores
    np.testing.assert_array_equal(tok, expected)
    np.testing.assert_allclose(A.compute_advantages("drgrpo", scores, gids, mask),
                               np_grpo(scores, gids, mask, scale=False), **_TOL)
    np.testing.assert_allclose(A.compute_advantages("reinforce_plus_plus", scores, gids, mask),
                               np_whiten(np_returns(expected, mask, 1.0), mask) * mask, **_TOL)

  def test_all_dead_batch_is_finite_zero(self):
    scores, gids, mask = make_batch(10)
    dead = np.zeros(len(scores), bool)
    for fn in (A.reinforce_pp_baseline_advantages, A.grpo_advantages, A.rloo_advantages):
      np.testing.assert_array_equal(fn(scores, gids, mask, sample_mask=dead), np.zeros_like(mask))


# ---------------------------------------------------------------------------------------------------------------
# property tests

_MAX_GROUPS, _MAX_SIZE, _T = 6, 6, 5
_group_batches = st.lists(st.lists(st.integers(0, 4).map(lambda x: x / 4), min_size=1, max_size=_MAX_SIZE),
                          min_size=2, max_size=_MAX_GROUPS)
# One static shape (dead padding via sample_mask) so each function compiles once for all examples.
_rfpp = jax.jit(lambda s, g, m, w: A.reinforce_pp_baseline_advantages(s, g, m, sample_mask=w,
                                                                      num_groups=_MAX_GROUPS))
_grpo = jax.jit(lambda s, g, m, w: A.grpo_advantages(s, g, m, sample_mask=w, num_groups=_MAX_GROUPS))
_drgrpo = jax.jit(lambda s, g, m, w: A.grpo_advantages(s, g, m, scale_by_std=False, sample_mask=w,
                                                       num_groups=_MAX_GROUPS))
_rloo = jax.jit(lambda s, g, m, w: A.rloo_advantages(s, g, m, sample_mask=w, num_groups=_MAX_GROUPS))
_keep = jax.jit(lambda s, g, w: A.dynamic_sampling_keep(s, g, sample_mask=w, num_groups=_MAX_GROUPS))


def _flatten(groups, seed=0):
  """Packs groups into a fixed [36] batch; returns scores, gids, mask [36, 5], live [36]."""
  size = _MAX_GROUPS * _MAX_SIZE
  gids = np.zeros(size, np.int32)
  scores = np.zeros(size, np.float32)
  live = np.zeros(size, bool)
  pos = 0
  for i, g in enumerate(groups):
    gids[pos:pos + len(g)], scores[pos:pos + len(g)], live[pos:pos + len(g)] = i, g, True
    pos += len(g)
  rng = np.random.default_rng(seed)
  mask = (np.arange(_T)[None] < rng.integers(1, _T + 1, size)[:, None]).astype(np.float32)
  return scores, gids, mask, live


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(_group_batches, st.floats(-5, 5), st.lists(st.floats(-3, 3), min_size=6, max_size=6))
def test_rfpp_baseline_invariant_to_reward_offsets(groups, offset, per_group):
  """The blog's argument: 0/1/-0.5 and -1/1/-0.5 style offsets do not change the advantages (singletons aside)."""
  hypothesis.assume(all(len(g) > 1 for g in groups))
  scores, gids, mask, live = _flatten(groups)
  shifted = scores + offset + np.asarray(per_group, np.float32)[gids]
  np.testing.assert_allclose(_rfpp(shifted, gids, mask, live), _rfpp(scores, gids, mask, live), rtol=1e-3,
                             atol=2e-3)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(_group_batches)
def test_all_equal_groups_zero_grpo_and_dropped(groups):
  scores, gids, mask, live = _flatten(groups)
  adv = np.asarray(_grpo(scores, gids, mask, live))
  keep = np.asarray(_keep(scores, gids, live))
  assert not keep[~live].any()
  for g, vals in enumerate(groups):
    rows = (gids == g) & live
    if len(vals) > 1 and len(set(vals)) == 1:
      assert np.all(adv[rows] == 0.0)  # exactly zero, not rounding noise / eps
      assert not keep[rows].any()
    else:
      assert keep[rows].all()  # reward variance, or a singleton group (kept by verl)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(_group_batches)
def test_rloo_and_grpo_are_zero_mean_within_groups(groups):
  scores, gids, mask, live = _flatten(groups)
  mask = np.ones_like(mask)
  for fn in (_rloo, _drgrpo):
    adv = np.asarray(fn(scores, gids, mask, live))[:, 0]
    for g, vals in enumerate(groups):
      if len(vals) > 1:
        assert abs(adv[(gids == g) & live].sum()) < 1e-4


def test_rfpp_baseline_whitened_statistics():
  scores, gids, mask = make_batch(11)
  adv = np.asarray(A.reinforce_pp_baseline_advantages(scores, gids, mask), np.float64)
  n = mask.sum()
  assert abs((adv * mask).sum() / n) < 1e-5
  assert abs(((adv ** 2) * mask).sum() / (n - 1) - 1.0) < 1e-4  # unit unbiased variance over valid tokens


def test_package_imports_nothing_else_from_prorl_jax():
  import pathlib  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(A.__file__).parent
  found = 0
  for path in root.glob("*.py"):
    for mod in re.findall(r"^\s*(?:from|import)\s+(prorl_jax[\w.]*)", path.read_text(), re.M):
      found += 1
      assert mod == "prorl_jax.algorithms" or mod.startswith("prorl_jax.algorithms."), (path.name, mod)
  assert found > 10  # the pattern does see the package's own imports


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
