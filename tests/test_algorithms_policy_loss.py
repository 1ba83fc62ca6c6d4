"""PPO decoupled-clip / dual-clip policy loss vs a numpy reference, finite differences and clipping properties."""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from prorl_jax import algorithms as A


def np_agg(values, mask, mode):
  """ALGORITHMS.md section 6 aggregation (local counts), float64."""
  v, m = np.asarray(values, np.float64), np.asarray(mask, np.float64)
  v = np.where(m > 0, v, 0.0)
  rows = [b for b in range(len(v)) if m[b].sum() > 0]
  if mode == "token-mean":
    return (v * m).sum() / m.sum()
  if mode == "token-sum":
    return (v * m).sum()
  if mode == "seq-mean-token-mean":
    return sum((v[b] * m[b]).sum() / (m[b].sum() + 1e-8) for b in rows) / len(rows)
  loss = sum((v[b] * m[b]).sum() for b in rows) / len(rows)
  return loss / v.shape[1] if mode == "seq-mean-token-sum-norm" else loss


def np_policy_loss(logp, old, adv, mask, clip_low, clip_high, clip_c, mode):
  """Per-token PPO objective written from ALGORITHMS.md section 5, float64."""
  logp, old, adv, m = (np.asarray(x, np.float64) for x in (logp, old, adv, mask))
  delta = np.clip(logp - old, -20, 20)
  ratio = np.exp(delta)
  per_token = np.empty_like(ratio)
  clipped_any = np.zeros_like(ratio, bool)
  dual_active = np.zeros_like(ratio, bool)
  for idx in np.ndindex(ratio.shape):
    a, r = adv[idx], ratio[idx]
    unclipped, clipped = -a * r, -a * min(max(r, 1 - clip_low), 1 + clip_high)
    value = max(unclipped, clipped)
    clipped_any[idx] = clipped > unclipped
    if clip_c is not None and a < 0:
      dual_active[idx] = value > -a * clip_c
      value = min(value, -a * clip_c)
    per_token[idx] = value
  mmean = lambda x: (x * m).sum() / (m.sum() + 1e-8)
  metrics = {"pg_clipfrac": mmean(clipped_any), "pg_clipfrac_lower": mmean(dual_active), "ppo_kl": mmean(-delta),
             "clipfrac_high": mmean((adv > 0) & (ratio > 1 + clip_high)),
             "clipfrac_low": mmean((adv < 0) & (ratio < 1 - clip_low))}
  return np_agg(per_token, m, mode), metrics


def _data(seed, b=6, t=10, spread=0.4, extreme=True):
  rng = np.random.default_rng(seed)
  logp = -rng.exponential(1.0, (b, t)).astype(np.float32)
  old = (logp + rng.normal(0, spread, (b, t))).astype(np.float32)
  if extreme:
    old[0, :2] = logp[0, :2] + np.array([30.0, -30.0], np.float32)  # beyond the log-ratio clamp
  adv = rng.normal(0, 1, (b, t)).astype(np.float32)
  mask = (np.arange(t)[None] < rng.integers(1, t + 1, b)[:, None]).astype(np.float32)
  mask[0, :2] = 1.0
  return logp, old, adv, mask


class PolicyLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(mode=A.AGG_MODES, clip_c=(None, 3.0))
  def test_matches_numpy(self, mode, clip_c):
    logp, old, adv, mask = _data(0)
    fn = self.variant(lambda *a: A.policy_loss(*a, clip_low=0.2, clip_high=0.28, clip_c=clip_c, agg_mode=mode))
    loss, metrics = fn(logp, old, adv, mask)
    ref_loss, ref_metrics = np_policy_loss(logp, old, adv, mask, 0.2, 0.28, clip_c, mode)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["pg_loss"], ref_loss, rtol=1e-5, atol=1e-6)
    for key, value in ref_metrics.items():
      np.testing.assert_allclose(metrics[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    self.assertTrue(0 < float(metrics["pg_clipfrac"]) < 1)
    if clip_c is not None:
      self.assertGreater(float(metrics["pg_clipfrac_lower"]), 0.0)  # the +30 log-ratio token hits the dual clip

  @parameterized.product(mode=("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"), clip_c=(None, 3.0))
  def test_gradient_matches_finite_differences(self, mode, clip_c):
    # No +-30 log-ratios here: a e^20-sized loss term would swamp float64 finite differences.
    logp, old, adv, mask = _data(1, spread=0.3, extreme=False)
    # Keep every ratio at least 1e-3 away from the kinks 1 - clip_low, 1 + clip_high and clip_c.
    ratio = np.exp(logp.astype(np.float64) - old)
    for kink in (0.8, 1.28, 3.0):
      near = np.abs(ratio - kink) < 1e-3
      old[near] -= 0.01
    grad = jax.grad(lambda lp: A.policy_loss(lp, old, adv, mask, clip_c=clip_c, agg_mode=mode)[0])(jnp.asarray(logp))
    h, fd = 1e-6, np.zeros(logp.shape)
    base = logp.astype(np.float64)
    for idx in np.ndindex(logp.shape):
      up, down = base.copy(), base.copy()
      up[idx] += h
      down[idx] -= h
      fd[idx] = (np_policy_loss(up, old, adv, mask, 0.2, 0.28, clip_c, mode)[0] -
                 np_policy_loss(down, old, adv, mask, 0.2, 0.28, clip_c, mode)[0]) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-3, atol=1e-6)
    self.assertTrue(np.all(np.asarray(grad)[mask == 0] == 0.0))

  def test_clamped_log_ratio_has_zero_gradient(self):
    logp, old, adv, mask = _data(1)
    adv[0, :2] = np.array([-1.0, 1.0], np.float32)
    grad = jax.jit(jax.grad(lambda lp: A.policy_loss(lp, old, adv, mask)[0]))(logp)
    np.testing.assert_array_equal(np.asarray(grad)[0, :2], 0.0)  # clamp at -20 (and clip), as verl

  def test_on_policy_ratio_one_gives_minus_mean_advantage(self):
    logp, _, adv, mask = _data(2)
    loss, metrics = A.policy_loss(logp, logp, adv, mask, clip_c=3.0)
    np.testing.assert_allclose(loss, -(adv * mask).sum() / mask.sum(), rtol=1e-5)
    for key in ("pg_clipfrac", "pg_clipfrac_lower", "ppo_kl", "clipfrac_high", "clipfrac_low"):
      self.assertEqual(float(metrics[key]), 0.0)

  def test_global_normalisation_over_micro_batches(self):
    logp, old, adv, mask = _data(3, b=8)
    tokens, seqs = A.global_counts(mask)
    loss_fn = lambda lp, o, a, m, n_tok, n_seq: A.policy_loss(lp, o, a, m, agg_mode="token-mean",
                                                              global_num_tokens=n_tok, global_num_seqs=n_seq)[0]
    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    full, full_grad = value_and_grad(logp, old, adv, mask, tokens, seqs)
    parts = [value_and_grad(logp[i:i + 2], old[i:i + 2], adv[i:i + 2], mask[i:i + 2], tokens, seqs)
             for i in range(0, 8, 2)]
    np.testing.assert_allclose(sum(p[0] for p in parts), full, rtol=1e-5)
    np.testing.assert_allclose(jnp.concatenate([p[1] for p in parts]), full_grad, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(full, A.policy_loss(logp, old, adv, mask)[0], rtol=1e-6)

  def test_is_weights_scale_tokens(self):
    logp, old, adv, mask = _data(4)
    w = np.random.default_rng(0).uniform(0.5, 2.0, logp.shape).astype(np.float32)
    loss, _ = A.policy_loss(logp, old, adv, mask, agg_mode="token-sum", is_weights=w)
    per_token, _ = np_policy_loss(logp, old, adv, mask, 0.2, 0.28, None, "token-sum")
    self.assertNotAlmostEqual(float(loss), float(per_token), places=3)
    ref = sum(np_policy_loss(logp[idx][None, None], old[idx][None, None], adv[idx][None, None],
                             mask[idx][None, None], 0.2, 0.28, None, "token-sum")[0] * w[idx]
              for idx in np.ndindex(logp.shape))
    np.testing.assert_allclose(loss, ref, rtol=1e-5)

  def test_bad_inputs_name_the_field(self):
    logp, old, adv, mask = _data(5)
    with self.assertRaisesRegex(ValueError, "clip_c"):
      A.policy_loss(logp, old, adv, mask, clip_c=1.0)
    with self.assertRaisesRegex(ValueError, "clip_low"):
      A.policy_loss(logp, old, adv, mask, clip_low=1.5)
    with self.assertRaisesRegex(ValueError, "clip_high"):
      A.policy_loss(logp, old, adv, mask, clip_high=-0.1)
    with self.assertRaisesRegex(ValueError, "advantages"):
      A.policy_loss(logp, old, adv[:, :-1], mask)
    with self.assertRaisesRegex(ValueError, "agg_mode"):
      A.policy_loss(logp, old, adv, mask, agg_mode="sum")


_policy_grad = jax.jit(jax.grad(lambda lp, old, adv, m, c: A.policy_loss(lp, old, adv, m, clip_low=0.2,
                                                                          clip_high=0.28, clip_c=c,
                                                                          agg_mode="token-sum")[0]))


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.lists(st.tuples(st.floats(-3, 3), st.one_of(st.just(0.0), st.floats(1e-3, 5), st.floats(-5, -1e-3))),
                           min_size=16, max_size=16),
                  st.sampled_from([None, 3.0]))
def test_clipping_never_pushes_past_the_bounds(pairs, clip_c):
  """Once the ratio is past a bound in the advantage's direction, that token's gradient is exactly zero; inside
  the trust region the gradient pushes logp in the advantage's direction."""
  log_ratio = np.array([p[0] for p in pairs], np.float32)[None]
  adv = np.array([p[1] for p in pairs], np.float32)[None]
  old = np.zeros_like(log_ratio)
  mask = np.ones_like(log_ratio)
  grad = np.asarray(_policy_grad(jnp.asarray(log_ratio), old, adv, mask, clip_c))
  ratio = np.exp(log_ratio.astype(np.float64))
  beyond = ((adv > 0) & (ratio > 1.28 + 1e-6)) | ((adv < 0) & (ratio < 0.8 - 1e-6))
  assert np.all(grad[beyond] == 0.0)
  inside = (ratio > 0.8 + 1e-6) & (ratio < 1.28 - 1e-6) & (adv != 0)
  assert np.all(np.sign(-grad[inside]) == np.sign(adv[inside]))  # descent raises logp iff A > 0
  if clip_c is not None:
    dual = (adv < 0) & (ratio > 3.0 + 1e-6)
    assert np.all(grad[dual] == 0.0)


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.floats(-25, 25), st.floats(0.01, 5))
def test_objective_credit_is_bounded(log_ratio, a):
  """A positive advantage is never credited beyond (1 + clip_high) * A; with dual clip a negative advantage
  costs at most clip_c * |A|."""
  one = lambda x: np.array([[x]], np.float32)
  loss_pos, _ = A.policy_loss(one(log_ratio), one(0.0), one(a), one(1.0))
  assert float(loss_pos) >= -(1.28 * a) * (1 + 1e-6)
  loss_neg, _ = A.policy_loss(one(log_ratio), one(0.0), one(-a), one(1.0), clip_c=3.0)
  assert float(loss_neg) <= 3.0 * a * (1 + 1e-6)
