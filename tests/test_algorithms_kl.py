"""KL estimators and clamp conventions vs numpy references (ALGORITHMS.md section 7)."""

import math

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from prorl_jax import algorithms as A


def np_kl(logp, ref, est, in_clamp=None, out_clamp=None):
  """d = logp - ref, clamped to +-in_clamp; k1 = d, abs = |d|, k2 = d^2/2, k3 = exp(-d) - 1 + d; output clamp."""
  d = np.asarray(logp, np.float64) - np.asarray(ref, np.float64)
  if in_clamp is not None:
    d = np.clip(d, -in_clamp, in_clamp)
  value = {"k1": d, "abs": np.abs(d), "k2": 0.5 * d ** 2, "k3": np.exp(-d) - 1 + d}[est]
  if out_clamp is not None:
    value = np.clip(value, -out_clamp, out_clamp)
  return value


# Conventions written out from the table, independent of the KL_CONVENTIONS dict.
_CONVENTIONS = {
    "verl": {"k1": (None, None), "abs": (None, None), "k2": (None, None), "k3": (20, 10)},
    "nemo_rl": {e: (20, 10) for e in ("k1", "abs", "k2", "k3")},
    "openrlhf": {e: (None, 10) for e in ("k1", "abs", "k2", "k3")},
    "prorlv2_blog": {e: (10, None) for e in ("k1", "abs", "k2", "k3")},
}


def _data(seed=0, b=4, t=16):
  rng = np.random.default_rng(seed)
  logp = -rng.exponential(1.0, (b, t)).astype(np.float32)
  ref = (logp + rng.normal(0, 3.0, (b, t))).astype(np.float32)
  ref[0, :6] = logp[0, :6] + np.array([-40, 40, -15, 15, -5, 5], np.float32)  # exercise both clamps
  return logp, ref


class KLTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(convention=tuple(_CONVENTIONS), est=("k1", "k2", "k3", "abs"))
  def test_conventions_match_numpy(self, convention, est):
    logp, ref = _data()
    got = self.variant(lambda a, b: A.kl_penalty(a, b, est, **A.KL_CONVENTIONS[convention]))(logp, ref)
    chex.assert_shape(got, logp.shape)
    in_c, out_c = _CONVENTIONS[convention][est]
    np.testing.assert_allclose(got, np_kl(logp, ref, est, in_c, out_c), rtol=1e-5, atol=1e-5)

  @parameterized.parameters(("kl", "k1"), ("mse", "k2"), ("low_var_kl", "k3"), ("abs", "abs"))
  def test_verl_names_are_aliases(self, verl_name, ours):
    logp, ref = _data(1)
    np.testing.assert_array_equal(A.kl_penalty(logp, ref, verl_name), A.kl_penalty(logp, ref, ours))

  def test_custom_clamps(self):
    logp, ref = _data(2)
    got = A.kl_penalty(logp, ref, "k3", input_clamp=5.0, output_clamp=math.inf)
    np.testing.assert_allclose(got, np_kl(logp, ref, "k3", 5.0, None), rtol=1e-5, atol=1e-5)
    got = A.kl_penalty(logp, ref, "k2", input_clamp=2.0, output_clamp=1.0)
    np.testing.assert_allclose(got, np_kl(logp, ref, "k2", 2.0, 1.0), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("k1", "k3", "abs")
  def test_straight_through_value_of_estimator_gradient_of_k2(self, est):
    logp, ref = _data(3)
    fn = self.variant(lambda a, b: A.kl_penalty(a, b, est, straight_through=True))
    np.testing.assert_allclose(fn(logp, ref), A.kl_penalty(logp, ref, est), rtol=1e-6)
    grad = jax.grad(lambda a: jnp.sum(fn(a, ref)))(jnp.asarray(logp))
    np.testing.assert_allclose(grad, logp.astype(np.float64) - ref, rtol=1e-5, atol=1e-5)  # d/d logp of d^2/2
    plus = jax.grad(lambda a: jnp.sum(A.kl_penalty(a, ref, est + "+")))(jnp.asarray(logp))
    np.testing.assert_allclose(plus, grad, rtol=1e-6)

  def test_k3_gradient_is_zero_where_clamped(self):
    logp, ref = _data(4)
    grad = np.asarray(jax.grad(lambda a: jnp.sum(A.kl_penalty(a, ref, "k3")))(jnp.asarray(logp)))
    d = logp.astype(np.float64) - ref
    analytic = np.where(np.abs(d) < 20, 1 - np.exp(-d), 0.0)  # d/dd (exp(-d) - 1 + d) inside the input clamp
    analytic = np.where(np_kl(logp, ref, "k3") >= 10, 0.0, analytic)  # and the output clamp
    np.testing.assert_allclose(grad, analytic, rtol=1e-4, atol=1e-5)

  def test_kl_in_reward_matches_verl_apply_kl_penalty_formula(self):
    logp, ref = _data(5)
    mask = np.zeros_like(logp)
    mask[:, :10] = 1.0
    mask[1, 6:] = 0.0
    scores = np.zeros_like(logp)
    scores[:, 9] = 1.0
    rewards, current = A.kl_in_reward(scores, logp, ref, mask, 0.1, "k1")
    kld = np_kl(logp, ref, "k1") * mask
    np.testing.assert_allclose(rewards, scores - 0.1 * kld, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(current, np.mean(kld.sum(1) / (mask.sum(1) + 1e-8)), rtol=1e-5)

  def test_bad_inputs(self):
    logp, ref = _data()
    with self.assertRaisesRegex(ValueError, "Unknown KL estimator"):
      A.kl_penalty(logp, ref, "k4")
    with self.assertRaisesRegex(ValueError, "ref_logp"):
      A.kl_penalty(logp, ref[:, :3], "k1")
    with self.assertRaisesRegex(ValueError, "input_clamp"):
      A.kl_penalty(logp, ref, "k2", input_clamp=-1.0)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(st.lists(st.floats(-4, 4), min_size=8, max_size=8), st.lists(st.floats(-4, 4), min_size=8,
                                                                                max_size=8))
def test_k1_and_k3_are_unbiased_for_the_exact_kl(z_p, z_q):
  """E_{a ~ pi}[k] = KL(pi || pi_ref) for k1 and k3 (unclamped), evaluated exactly by summing over the vocabulary."""
  logp = np.asarray(jax.nn.log_softmax(jnp.asarray(z_p, jnp.float32)))
  ref = np.asarray(jax.nn.log_softmax(jnp.asarray(z_q, jnp.float32)))
  p = np.exp(logp.astype(np.float64))
  exact = np.sum(p * (logp.astype(np.float64) - ref))
  for est in ("k1", "k3"):
    value = np.asarray(A.kl_penalty(logp[None], ref[None], est, input_clamp=math.inf, output_clamp=math.inf))[0]
    np.testing.assert_allclose(np.sum(p * value), exact, rtol=1e-4, atol=1e-5)
  assert np.all(np.asarray(A.kl_penalty(logp[None], ref[None], "k3")) >= -1e-6)  # k3 is non-negative
