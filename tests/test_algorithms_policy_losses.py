"""GSPO, CISPO, SAPO, GMPO, KL-Cov, Clip-Cov, pass@k advantages and rollout correction against numpy references.

Each reference is written from the papers' formulas as verl 0.9.1 computes them (ALGORITHMS.md §17), in float64.
Gradients are checked against central finite differences of the numpy loss with its stop-gradient parts frozen at
the evaluation point (the semantics of `stop_gradient`), with and without jit. verl itself is compared in
`benchmarks/verl_parity.py`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prorl_jax import algorithms as A

CLIP_LOW, CLIP_HIGH = 0.2, 0.28


def _inputs(seed=0, b=6, t=9, extreme=True):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, t + 1, b)
  lengths[2] = 0  # an empty row
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float64)
  logp = -rng.exponential(1.0, (b, t))
  old = logp + rng.normal(0, 0.3, (b, t))
  if extreme:  # ratios far outside any bound
    old[0, :2] = logp[0, :2] - 30.0
    old[1, :2] = logp[1, :2] + 30.0
  adv = rng.normal(0, 1, (b, t)) * mask
  weights = np.exp(rng.normal(0, 0.3, (b, t))) * mask
  return logp, old, adv, mask, weights


# ---- numpy references ------------------------------------------------------------------------------------------

def _agg(loss, m, mode):
  if mode == "token-mean":
    return (loss * m).sum() / max(m.sum(), 1.0)
  tokens = m.sum(-1)
  live = tokens > 0
  seq = (loss * m).sum(-1) / (tokens + 1e-8)
  return seq[live].sum() / max(live.sum(), 1)


def _mmean(v, m):
  return (v * m).sum() / (m.sum() + 1e-8)


def np_gspo(lp, lp0, old, adv, m, w, mode):
  s0 = ((lp0 - old) * m).sum(-1) / np.maximum(m.sum(-1), 1.0)
  ratio = np.exp(np.minimum(lp - lp0 + s0[:, None], 10.0))
  loss = np.maximum(-adv * ratio, -adv * np.clip(ratio, 1 - CLIP_LOW, 1 + CLIP_HIGH))
  return _agg(loss * (w if w is not None else 1.0), m, mode)


def np_cispo(lp, lp0, old, adv, m, w, mode):
  c0 = np.clip(np.exp(np.clip(lp0 - old, -20, 20)), 1 - CLIP_LOW, 1 + CLIP_HIGH)
  return _agg(-c0 * adv * lp * (w if w is not None else 1.0), m, mode)


def np_sapo(lp, lp0, old, adv, m, w, mode, tau_pos=1.0, tau_neg=1.05):
  del lp0, mode
  r = np.exp(np.clip(lp - old, -20, 20))
  tau = np.where(adv > 0, tau_pos, tau_neg)
  gate = 1 / (1 + np.exp(-tau * (r - 1))) * 4 / tau
  return _agg(-gate * adv * (w if w is not None else 1.0), m, "seq-mean-token-mean")


def np_gmpo(lp, lp0, old, adv, m, w, mode):
  del lp0, mode
  d = lp - old
  sg = np.sign(adv)
  chosen = sg * np.minimum(sg * d, sg * np.clip(d, -CLIP_LOW, CLIP_HIGH))
  n = m.sum(-1)
  per_seq = -(adv * m).sum(-1) / (n + 1e-8) * np.exp((chosen * m).sum(-1) / (n + 1e-8))
  if w is not None:
    per_seq = per_seq * np.exp((np.log(w + 1e-10) * m).sum(-1) / (n + 1e-8))
  return per_seq.mean()


def np_kl_cov(lp, lp0, old, adv, m, w, mode, ratio=0.1, coef=0.1):
  valid = m > 0
  a, l0 = adv[valid], lp0[valid]
  cov = (a - a.mean()) * (l0 - l0.mean())
  k = max(1, int(valid.sum() * ratio))
  chosen = np.zeros_like(m, bool)
  idx = np.argwhere(valid)[np.argsort(-cov, kind="stable")[:k]]
  chosen[idx[:, 0], idx[:, 1]] = True
  d = lp - old
  loss = -adv * np.exp(d) + np.where(chosen, coef * np.abs(d), 0.0)
  return _agg(loss * (w if w is not None else 1.0), m, mode), chosen


def np_clip_cov(lp, lp0, old, adv, m, w, mode, lb=0.05, ub=5.0):
  """Ratio 1: every eligible token is cut (the deterministic part of Clip-Cov)."""
  d0 = lp0 - old
  r0 = np.exp(d0)
  clipped0 = -adv * np.clip(r0, 1 - CLIP_LOW, 1 + CLIP_HIGH) > -adv * r0
  cov = (adv - _mmean(adv, m)) * (lp0 - _mmean(lp0, m))
  cut = (m > 0) & ~clipped0 & (cov > lb) & (cov < ub)
  r = np.exp(lp - old)
  loss = np.where(cut, 0.0, np.maximum(-adv * r, -adv * np.clip(r, 1 - CLIP_LOW, 1 + CLIP_HIGH)))
  return _agg(loss * (w if w is not None else 1.0), m, mode), cut


def _jax_loss(name, mode, logp, old, adv, m, w):
  kw = {"gspo": dict(clip_low=CLIP_LOW, clip_high=CLIP_HIGH, agg_mode=mode),
        "cispo": dict(clip_low=CLIP_LOW, clip_high=CLIP_HIGH, agg_mode=mode),
        "sapo": dict(tau_pos=1.0, tau_neg=1.05),
        "gmpo": dict(clip_low=CLIP_LOW, clip_high=CLIP_HIGH, agg_mode=mode),
        "kl_cov": dict(kl_cov_ratio=0.1, ppo_kl_coef=0.1, agg_mode=mode),
        "clip_cov": dict(key=jax.random.key(3), clip_low=CLIP_LOW, clip_high=CLIP_HIGH, clip_cov_ratio=1.0,
                         clip_cov_lb=0.05, clip_cov_ub=5.0, agg_mode=mode)}[name]
  fn = getattr(A, f"{name}_loss")
  return fn(logp, old, adv, m, is_weights=w, **kw)


REFS = {"gspo": np_gspo, "cispo": np_cispo, "sapo": np_sapo, "gmpo": np_gmpo,
        "kl_cov": lambda *a, **k: np_kl_cov(*a, **k)[0], "clip_cov": lambda *a, **k: np_clip_cov(*a, **k)[0]}


def _finite_difference(f, x, eps=1e-6):
  grad = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    hi, lo = x.copy(), x.copy()
    hi[idx] += eps
    lo[idx] -= eps
    grad[idx] = (f(hi) - f(lo)) / (2 * eps)
  return grad


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
@pytest.mark.parametrize("name", sorted(REFS))
def test_loss_and_gradient_match_numpy(name, mode, weighted, jit):
  """Values with log-ratios of +-30 among the inputs (clamps, clipping, unclamped exponentials); gradients on
  moderate inputs, where finite differences resolve every token next to the others."""
  f32 = lambda a: None if a is None else jnp.asarray(a, jnp.float32)
  for extreme in (True, False):
    logp, old, adv, m, weights = _inputs(extreme=extreme)
    w = weights if weighted else None
    loss_fn = lambda lp, old=old, adv=adv, m=m, w=w: _jax_loss(name, mode, lp, f32(old), f32(adv), f32(m), f32(w))
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    if jit:
      value_and_grad = jax.jit(value_and_grad)
    (loss, metrics), grad = value_and_grad(f32(logp))
    ref = functools.partial(REFS[name], lp0=logp, old=old, adv=adv, m=m, w=w, mode=mode)
    np.testing.assert_allclose(float(loss), ref(logp), rtol=2e-5, atol=1e-6)
    assert float(metrics["pg_loss"]) == float(loss)
  np.testing.assert_allclose(np.asarray(grad), _finite_difference(ref, logp), rtol=2e-3, atol=2e-5)
  assert set(metrics) >= {"pg_clipfrac", "pg_clipfrac_lower", "ppo_kl", "clipfrac_high", "clipfrac_low", "cov_frac"}


def test_metrics_match_numpy():
  logp, old, adv, m, _ = _inputs(1)
  f = lambda name, mode="token-mean": _jax_loss(name, mode, *(jnp.asarray(a, jnp.float32)
                                                             for a in (logp, old, adv, m)), None)[1]
  d = logp - old
  dc = np.clip(d, -20, 20)
  r = np.exp(dc)
  np.testing.assert_allclose(float(f("cispo")["pg_clipfrac"]),
                             _mmean((np.clip(r, 1 - CLIP_LOW, 1 + CLIP_HIGH) != r).astype(float), m), atol=1e-6)
  np.testing.assert_allclose(float(f("cispo")["ppo_kl"]), _mmean(-dc, m), rtol=1e-5)
  np.testing.assert_allclose(float(f("gspo")["ppo_kl"]), _mmean(-d, m), rtol=1e-5)
  _, chosen = np_kl_cov(logp, logp, old, adv, m, None, "token-mean")
  np.testing.assert_allclose(float(f("kl_cov")["cov_frac"]), _mmean(chosen.astype(float), m), atol=1e-6)
  np.testing.assert_allclose(float(f("kl_cov")["ppo_kl"]), _mmean(np.abs(d), m), rtol=1e-5)
  _, cut = np_clip_cov(logp, logp, old, adv, m, None, "token-mean")
  assert cut.sum() > 0
  np.testing.assert_allclose(float(f("clip_cov")["pg_clipfrac"]), _mmean(cut.astype(float), m), atol=1e-6)
  clipped = np.clip(d, -CLIP_LOW, CLIP_HIGH) != d
  np.testing.assert_allclose(float(f("gmpo")["pg_clipfrac"]), _mmean((clipped & (adv > 0)).astype(float), m),
                             atol=1e-6)


def test_clip_cov_cuts_the_requested_share_at_random():
  logp, old, adv, m, _ = _inputs(2, b=16, t=32)
  args = [jnp.asarray(a, jnp.float32) for a in (logp, old, adv, m)]
  _, eligible = np_clip_cov(logp, logp, old, adv, m, None, "token-mean", lb=-1e9, ub=1e9)
  runs = []
  for seed in range(4):
    _, metrics = A.clip_cov_loss(*args, key=jax.random.key(seed), clip_low=CLIP_LOW, clip_high=CLIP_HIGH,
                                 clip_cov_ratio=0.1, clip_cov_lb=-1e9, clip_cov_ub=1e9)
    runs.append(float(metrics["cov_frac"]))
  want = min(max(1, int(m.sum() * 0.1)), eligible.sum()) / m.sum()
  np.testing.assert_allclose(runs, want, atol=1e-6)
  # Which tokens depends on the key: the losses differ between keys.
  losses = {float(A.clip_cov_loss(*args, key=jax.random.key(s), clip_low=CLIP_LOW, clip_high=CLIP_HIGH,
                                  clip_cov_ratio=0.1, clip_cov_lb=-1e9, clip_cov_ub=1e9)[0]) for s in range(4)}
  assert len(losses) > 1


def test_all_masked_batch_gives_zero_loss_and_no_nan():
  logp, old, adv, m, _ = _inputs()
  zero = np.zeros_like(m)
  for name in REFS:
    loss, metrics = _jax_loss(name, "token-mean", *(jnp.asarray(a, jnp.float32) for a in (logp, old, adv, zero)),
                              None)
    assert float(loss) == 0.0, name
    assert all(np.isfinite(float(v)) for v in metrics.values()), name


def test_bad_arguments_name_the_field():
  logp, old, adv, m, _ = _inputs()
  with pytest.raises(ValueError, match="clip_low"):
    A.gspo_loss(logp, old, adv, m, clip_low=1.5, clip_high=0.2)
  with pytest.raises(ValueError, match="tau_neg"):
    A.sapo_loss(logp, old, adv, m, tau_pos=1.0, tau_neg=0.0)
  with pytest.raises(ValueError, match="kl_cov_ratio"):
    A.kl_cov_loss(logp, old, adv, m, kl_cov_ratio=0.0, ppo_kl_coef=0.1)
  with pytest.raises(ValueError, match="agg_mode"):
    A.cispo_loss(logp, old, adv, m, clip_low=0.2, clip_high=0.2, agg_mode="mean")
  with pytest.raises(ValueError, match="shape"):
    A.gmpo_loss(logp, old[:, :3], adv, m, clip_low=0.2, clip_high=0.2)


# ---- pass@k advantages ------------------------------------------------------------------------------------------

def np_passk(scores, gids, mask, scale_by_std=True, eps=1e-6):
  adv = np.zeros(len(scores))
  for g in np.unique(gids):
    idx = np.flatnonzero(gids == g)
    vals = scores[idx]
    order = np.argsort(-vals, kind="stable")
    best, second = idx[order[0]], vals[order[1]]
    a = vals[order[0]] - second
    if scale_by_std:
      a /= vals.std(ddof=1) + eps
    adv[best] = a
  return adv[:, None] * mask


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("scale_by_std", [True, False])
def test_pass_at_k_advantages_match_numpy(scale_by_std, jit):
  rng = np.random.default_rng(0)
  gids = np.repeat(np.arange(5), 4)
  scores = rng.integers(0, 3, 20) / 2.0
  scores[:4] = 1.0  # all equal: nobody gets an advantage
  mask = (rng.random((20, 7)) > 0.3).astype(np.float32)
  fn = functools.partial(A.pass_at_k_advantages, scale_by_std=scale_by_std)
  if jit:
    fn = jax.jit(lambda s, g, m: A.pass_at_k_advantages(s, g, m, scale_by_std=scale_by_std, num_groups=5))
  got = np.asarray(fn(jnp.asarray(scores, jnp.float32), jnp.asarray(gids), jnp.asarray(mask)))
  np.testing.assert_allclose(got, np_passk(scores, gids, mask, scale_by_std), rtol=1e-5, atol=1e-6)
  assert np.all(got[:4] == 0)
  # At most one response per group has a nonzero advantage.
  assert all((np.abs(got[gids == g]).sum(-1) > 0).sum() <= 1 for g in range(5))


def test_pass_at_k_needs_two_responses_per_group():
  with pytest.raises(ValueError, match="at least 2 responses"):
    A.pass_at_k_advantages(jnp.array([1.0, 0.0, 1.0]), jnp.array([0, 0, 1]), jnp.ones((3, 2)))
  out = jax.jit(lambda s, g, m: A.pass_at_k_advantages(s, g, m, num_groups=2))(
      jnp.array([1.0, 0.0, 1.0]), jnp.array([0, 0, 1]), jnp.ones((3, 2)))
  assert np.isnan(np.asarray(out)[2]).all() and np.isfinite(np.asarray(out)[:2]).all()


# ---- rollout correction ---------------------------------------------------------------------------------------------

def np_rollout_weights(trainer, rollout, m, level, threshold):
  d = trainer - rollout
  if level == "token":
    raw = np.exp(np.clip(d, -20, 20))
  else:
    raw = np.broadcast_to(np.exp(np.clip((d * m).sum(-1, keepdims=True), -20, 20)), d.shape)
  raw = raw * m
  if isinstance(threshold, float):
    return np.minimum(raw, threshold)
  lo, hi = threshold
  return np.where((raw >= lo) & (raw <= hi), raw, 0.0)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("threshold", [2.0, (0.5, 5.0)])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_rollout_correction_weights_match_numpy(level, threshold, jit):
  logp, old, _, m, _ = _inputs(3)
  rollout = old + np.random.default_rng(4).normal(0, 0.4, old.shape)
  fn = functools.partial(A.rollout_correction_weights, level=level, threshold=threshold)
  if jit:
    fn = jax.jit(fn)
  w, metrics = fn(jnp.asarray(old, jnp.float32), jnp.asarray(rollout, jnp.float32), jnp.asarray(m, jnp.float32))
  want = np_rollout_weights(old, rollout, m, level, threshold)
  np.testing.assert_allclose(np.asarray(w), want, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(float(metrics["rollout_is_mean"]), _mmean(want, m), rtol=2e-5)
  if not isinstance(threshold, float):
    raw = np_rollout_weights(old, rollout, m, level, 1e30)
    oob = ((raw < threshold[0]) | (raw > threshold[1])).astype(float)
    np.testing.assert_allclose(float(metrics["rollout_is_oob_ratio"]), _mmean(oob, m), atol=1e-6)


def test_rollout_correction_rejects_bad_thresholds():
  x = jnp.zeros((2, 3))
  for bad, match in ((True, "number"), ((0.5,), "pair"), ((2.0, 1.0), "lower <= upper"), (-1.0, "> 0")):
    with pytest.raises(ValueError, match=match):
      A.rollout_correction_weights(x, x, x + 1, threshold=bad)
  with pytest.raises(ValueError, match="level"):
    A.rollout_correction_weights(x, x, x + 1, level="row")


def test_mismatch_metrics_are_zero_when_the_policies_agree_and_match_numpy_otherwise():
  logp, old, _, m, _ = _inputs(5)
  same = A.rollout_mismatch_metrics(jnp.asarray(old), jnp.asarray(old), jnp.asarray(m))
  assert all(float(v) == 0.0 for v in same.values())
  rollout = old + np.random.default_rng(6).normal(0, 0.2, old.shape)
  got = A.rollout_mismatch_metrics(jnp.asarray(old, jnp.float32), jnp.asarray(rollout, jnp.float32),
                                   jnp.asarray(m, jnp.float32))
  d = old - rollout
  np.testing.assert_allclose(float(got["mismatch/abs_logp_diff_mean"]), _mmean(np.abs(d), m), rtol=1e-5)
  np.testing.assert_allclose(float(got["mismatch/abs_logp_diff_max"]), np.abs(d)[m > 0].max(), rtol=1e-5)
  np.testing.assert_allclose(float(got["mismatch/kl_k1"]), _mmean(-d, m), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(float(got["mismatch/kl_k3"]), _mmean(np.exp(d) - 1 - d, m), rtol=1e-4)


def test_policy_loss_takes_rollout_weights():
  logp, old, adv, m, w = _inputs(7)
  args = [jnp.asarray(a, jnp.float32) for a in (logp, old, adv, m)]
  plain = A.policy_loss(*args, is_weights=None)[0]
  ones = A.policy_loss(*args, is_weights=jnp.ones_like(args[0]))[0]
  weighted = A.policy_loss(*args, is_weights=jnp.asarray(w, jnp.float32))[0]
  assert float(plain) == pytest.approx(float(ones)) and float(weighted) != pytest.approx(float(plain))
