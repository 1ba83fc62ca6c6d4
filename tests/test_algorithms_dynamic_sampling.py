"""Dynamic-sampling keep rules vs numpy, and the host-side refill accumulator."""

import chex
import numpy as np
import pytest
from absl.testing import parameterized

from prorl_jax import algorithms as A


def np_keep(scores, gids, rule="verl", low=0.0, high=1.0, atol=0.0):
  keep = np.zeros(len(scores), bool)
  for g in np.unique(gids):
    rows = gids == g
    vals = np.asarray(scores[rows], np.float64)
    if rule == "verl":
      keep[rows] = len(vals) == 1 or vals.max() - vals.min() > atol
    else:
      keep[rows] = low < vals.mean() < high
  return keep


def _batch(seed, n_groups=8, n=4):
  rng = np.random.default_rng(seed)
  gids = np.repeat(np.arange(n_groups), n).astype(np.int32)
  scores = rng.integers(0, 2, n_groups * n).astype(np.float32)
  scores[gids == 0], scores[gids == 1] = 1.0, 0.0  # all correct / all wrong
  scores[gids == 2] = 0.5  # identical partial scores: OpenRLHF keeps, verl drops
  scores[gids == 3] = [0.2, 0.2 + 1e-7, 0.2, 0.2]  # nearly equal: dropped only with atol
  perm = rng.permutation(len(gids))
  return scores[perm], gids[perm]


class KeepTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0, 1)
  def test_rules_match_numpy(self, seed):
    scores, gids = _batch(seed)
    for kwargs in ({}, {"atol": 1e-6}, {"rule": "openrlhf"}, {"rule": "openrlhf", "low": 0.2, "high": 0.8}):
      got = self.variant(lambda s, g, kw=kwargs: A.dynamic_sampling_keep(s, g, **kw))(scores, gids)
      chex.assert_shape(got, scores.shape)
      np.testing.assert_array_equal(got, np_keep(scores, gids, **kwargs), err_msg=str(kwargs))

  def test_verl_drops_identical_partial_scores_openrlhf_keeps_them(self):
    scores = np.array([0.5, 0.5, 0.5, 0.3], np.float32)
    gids = np.array([0, 0, 0, 1], np.int32)
    np.testing.assert_array_equal(A.dynamic_sampling_keep(scores, gids), [False, False, False, True])
    np.testing.assert_array_equal(A.dynamic_sampling_keep(scores, gids, rule="openrlhf"), [True] * 4)

  def test_equal_rewards_whose_float_mean_is_inexact_are_dropped(self):
    scores = np.full(7, 0.1, np.float32)  # sum/7 of 0.1f is not exactly 0.1f; max - min is exactly 0
    np.testing.assert_array_equal(A.dynamic_sampling_keep(scores, np.zeros(7, np.int32)), [False] * 7)

  def test_sample_mask(self):
    scores = np.array([1.0, 0.0, 1.0, 1.0], np.float32)
    gids = np.array([0, 0, 1, 1], np.int32)
    live = np.array([True, False, True, True])
    # The dead 0.0 no longer gives group 0 variance, but group 0 is now a singleton (kept, as verl).
    np.testing.assert_array_equal(A.dynamic_sampling_keep(scores, gids, sample_mask=live), [True, False, False,
                                                                                              False])

  def test_bad_rule(self):
    with self.assertRaisesRegex(ValueError, "rule"):
      A.dynamic_sampling_keep(np.zeros(2), np.zeros(2, np.int32), rule="dapo")


def _gen_batch(seed, n_groups, n=4, t=5):
  scores, gids = _batch(seed, n_groups, n)
  data = {"rewards": scores, "tokens": np.arange(len(scores) * t).reshape(len(scores), t) + 1000 * seed,
          "uid": np.array([f"s{seed}g{g}" for g in gids])}
  return data, gids, np.asarray(A.dynamic_sampling_keep(scores, gids))


class AccumulatorTest(parameterized.TestCase):

  def test_fills_truncates_and_keeps_groups_whole(self):
    acc = A.DynamicSamplingAccumulator(target_prompts=6, max_gen_batches=5)
    kept_uids = []
    seed = 0
    while not acc.ready:
      data, gids, keep = _gen_batch(seed, 8)
      acc.add(data, gids, keep)
      kept_uids += list(dict.fromkeys(data["uid"][keep]))  # arrival order, unique
      seed += 1
    self.assertEqual(acc.num_gen_batches, seed)
    out, gids = acc.take()
    self.assertEqual(len(np.unique(gids)), 6)
    np.testing.assert_array_equal(np.unique(gids), np.arange(6))
    self.assertEqual(list(dict.fromkeys(out["uid"])), kept_uids[:6])  # first groups, arrival order
    for g in range(6):
      rows = gids == g
      self.assertEqual(len(set(out["uid"][rows])), 1)
      self.assertEqual(rows.sum(), 4)  # whole groups
      self.assertGreater(np.ptp(out["rewards"][rows]), 0.0)  # every kept group has reward variance
    self.assertEqual(out["tokens"].shape, (24, 5))
    self.assertEqual(acc.num_prompts, 0)  # verl: surplus dropped
    self.assertEqual(acc.num_gen_batches, 0)

  def test_raises_after_max_gen_batches_with_actionable_message(self):
    acc = A.DynamicSamplingAccumulator(target_prompts=100, max_gen_batches=2)
    data, gids, keep = _gen_batch(2, 4)
    acc.add(data, gids, keep)
    with self.assertRaisesRegex(A.DynamicSamplingError, "max_gen_batches.*disable"):
      acc.add(data, gids, keep)
    unlimited = A.DynamicSamplingAccumulator(target_prompts=100, max_gen_batches=0)
    for _ in range(5):
      unlimited.add(data, gids, keep)

  def test_bad_inputs(self):
    acc = A.DynamicSamplingAccumulator(target_prompts=2)
    data, gids, keep = _gen_batch(3, 4)
    partial = keep.copy()
    partial[np.flatnonzero(keep)[0]] = False
    with self.assertRaisesRegex(ValueError, "constant within each group"):
      acc.add(data, gids, partial)
    with self.assertRaisesRegex(ValueError, "leading dimension"):
      acc.add({"rewards": data["rewards"][:-1]}, gids, keep)
    with self.assertRaisesRegex(ValueError, "ready"):
      acc.take()
    with self.assertRaisesRegex(ValueError, "target_prompts"):
      A.DynamicSamplingAccumulator(target_prompts=0)


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
