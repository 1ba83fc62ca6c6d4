"""Length shaping: DAPO overlong penalty, ProRLv2 cosine penalty and its on/off schedule, stop-properly."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from prorl_jax import algorithms as A


def dapo_eq13(length, l_max, l_cache):
  """DAPO Eq. 13 (penalty_factor 1): 0, linear ramp over the cache, -1 beyond l_max."""
  if length <= l_max - l_cache:
    return 0.0
  if length <= l_max:
    return ((l_max - l_cache) - length) / l_cache
  return -1.0


def np_cosine(length, max_len, eta_min, eta_max):
  t = min(max(length, 0), max_len)
  return eta_min + 0.5 * (eta_max - eta_min) * (1 + math.cos(math.pi * t / max_len))


class LengthShapingTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_overlong_matches_dapo_eq13_and_scales(self):
    lengths = np.arange(0, 101)
    got = self.variant(lambda x: A.overlong_penalty(x, 100, 20, 1.0))(lengths)
    chex.assert_shape(got, (101,))
    np.testing.assert_allclose(got, [dapo_eq13(x, 100, 20) for x in lengths], rtol=1e-6, atol=1e-7)
    got = self.variant(lambda x: A.overlong_penalty(x, 100, 20, 0.5))(lengths)
    np.testing.assert_allclose(got, [0.5 * dapo_eq13(x, 100, 20) for x in lengths], rtol=1e-6, atol=1e-7)

  @chex.variants(with_jit=True, without_jit=True)
  def test_cosine_matches_formula(self):
    lengths = np.array([0, 1, 50, 256, 511, 512, 900])
    got = self.variant(lambda x: A.cosine_length_penalty(x, 512, -0.5, 0.1))(lengths)
    np.testing.assert_allclose(got, [np_cosine(x, 512, -0.5, 0.1) for x in lengths], rtol=1e-5, atol=1e-6)
    self.assertAlmostEqual(float(got[0]), 0.1, places=6)  # eta_max at length 0
    self.assertAlmostEqual(float(got[-1]), -0.5, places=6)  # eta_min at (and past) the limit
    self.assertTrue(np.all(np.diff(np.asarray(got)) <= 0))

  def test_cosine_correctness_aware(self):
    lengths = np.array([0, 100, 400, 0, 100, 400])
    correct = np.array([True, True, True, False, False, False])
    got = np.asarray(A.cosine_length_penalty(lengths, 400, -1.0, 0.0, correct=correct))
    np.testing.assert_allclose(got[:3], [np_cosine(x, 400, -1.0, 0.0) for x in lengths[:3]], atol=1e-6)
    np.testing.assert_allclose(got[3:], [np_cosine(x, 400, 0.0, -1.0) for x in lengths[3:]], atol=1e-6)  # swapped
    got = np.asarray(A.cosine_length_penalty(lengths, 400, 1.0, 2.0, correct=correct, wrong_eta_min=0.0,
                                             wrong_eta_max=-10.0))  # arXiv 2502.03373's end points
    np.testing.assert_allclose(got[3:], [np_cosine(x, 400, 0.0, -10.0) for x in lengths[3:]], atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_schedule_100_on_500_off(self):
    steps = np.arange(0, 1300)
    fn = self.variant(jax.vmap(lambda s: A.length_penalty_active(s, 100, 500)))
    got = np.asarray(fn(steps))
    expected = ((steps % 600) < 100)
    np.testing.assert_array_equal(got, expected)
    self.assertTrue(got[0] and got[99] and not got[100] and not got[599] and got[600])
    shifted = np.asarray(jax.vmap(lambda s: A.length_penalty_active(s, 100, 500, offset=50))(steps))
    np.testing.assert_array_equal(shifted, (steps >= 50) & (((steps - 50) % 600) < 100))
    self.assertTrue(bool(A.length_penalty_active(12345, 10, 0)))
    self.assertFalse(bool(A.length_penalty_active(3, 0, 10)))

  def test_shape_rewards_combines_all_terms_and_follows_the_step(self):
    cfg = A.LengthShapingConfig(cosine_max_len=64, cosine_eta_min=-0.4, cosine_eta_max=0.0, cosine_coef=0.5,
                                cosine_on_steps=3, cosine_off_steps=2, overlong_max_len=64, overlong_buffer_len=16,
                                overlong_penalty_factor=1.0, stop_properly_coef=0.0)
    rewards = np.array([1.0, 1.0, 0.0, 1.0], np.float32)
    lengths = np.array([10, 60, 30, 64])
    truncated = np.array([False, False, False, True])
    fn = jax.jit(lambda r, l, s, t: A.shape_rewards(r, l, s, cfg, truncated=t))
    for step in range(7):
      got = fn(rewards, lengths, step, truncated)
      on = step % 5 < 3
      expected = [(0.0 if tr else r) + dapo_eq13(l, 64, 16) + (0.5 * np_cosine(l, 64, -0.4, 0.0) if on else 0.0)
                  for r, l, tr in zip(rewards, lengths, truncated)]
      np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")

  def test_stop_properly(self):
    got = A.stop_properly_shaping(np.array([1.0, 0.5, 1.0]), np.array([True, False, False]), 0.25)
    np.testing.assert_allclose(got, [0.25, 0.5, 1.0])

  @parameterized.parameters(
      (lambda: A.overlong_penalty(np.ones(3), 10, 0, 1.0), "buffer_len"),
      (lambda: A.overlong_penalty(np.ones(3), 4, 8, 1.0), "max_len"),
      (lambda: A.cosine_length_penalty(np.ones(3), 0, -1.0, 0.0), "max_len"),
      (lambda: A.length_penalty_active(0, -1, 5), "on_steps"),
      (lambda: A.LengthShapingConfig(overlong_max_len=4, overlong_buffer_len=8), "overlong_max_len"),
      (lambda: A.shape_rewards(np.ones(2), np.ones(2), 0, A.LengthShapingConfig(stop_properly_coef=0.0)),
       "truncated"),
  )
  def test_bad_inputs(self, fn, field):
    with self.assertRaisesRegex(ValueError, field):
      fn()

  def test_config_is_hashable_for_static_jit(self):
    cfg = A.LengthShapingConfig(cosine_max_len=8)
    self.assertEqual(hash(cfg), hash(A.LengthShapingConfig(cosine_max_len=8)))
    fn = jax.jit(A.shape_rewards, static_argnames="config")
    np.testing.assert_allclose(fn(jnp.ones(2), jnp.array([0, 8]), 0, config=cfg), [1.0, 0.5])
