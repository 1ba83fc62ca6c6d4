"""Reference reset on a flax.struct train state (v1: optimizer re-init, v2: kept) and the reset policy."""

import functools
import json

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized

from prorl_jax import algorithms as A


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  ref_params: dict
  opt_state: optax.OptState


_OPT = optax.adamw(1e-2)


def _trained_state(n_updates=3):
  params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
  state = TrainState(step=jnp.array(0), params=params, ref_params=jax.tree.map(jnp.copy, params),
                     opt_state=_OPT.init(params))

  @jax.jit
  def update(s):
    grads = jax.tree.map(lambda p: p * 0.1 + 1.0, s.params)
    updates, opt_state = _OPT.update(grads, s.opt_state, s.params)
    return s.replace(step=s.step + 1, params=optax.apply_updates(s.params, updates), opt_state=opt_state)

  for _ in range(n_updates):
    state = update(state)
  return state


class ResetReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_v2_keeps_the_optimizer(self):
    state = _trained_state()
    new = self.variant(A.reset_reference)(state)
    chex.assert_trees_all_close(new.ref_params, state.params)
    chex.assert_trees_all_equal(new.opt_state, state.opt_state)
    chex.assert_trees_all_equal(new.params, state.params)
    self.assertFalse(jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.allclose(a, b)), state.ref_params,
                                               new.ref_params)))  # it really changed

  @chex.variants(with_jit=True, without_jit=True)
  def test_v1_reinitialises_the_optimizer(self):
    state = _trained_state()
    new = self.variant(functools.partial(A.reset_reference, optimizer=_OPT, reset_optimizer=True))(state)
    chex.assert_trees_all_close(new.opt_state, _OPT.init(state.params))
    self.assertEqual(int(new.opt_state[0].count), 0)
    chex.assert_trees_all_close(new.ref_params, state.params)

  def test_given_params_and_rollback(self):
    state = _trained_state()
    best = jax.tree.map(lambda p: p * 0 + 7.0, state.params)
    new = A.reset_reference(state, params=best)
    chex.assert_trees_all_close(new.ref_params, best)
    chex.assert_trees_all_equal(new.params, state.params)
    rolled = A.reset_reference(state, params=best, set_policy=True, optimizer=_OPT, reset_optimizer=True)
    chex.assert_trees_all_close(rolled.params, best)
    chex.assert_trees_all_close(rolled.opt_state, _OPT.init(best))

  def test_ref_dtype_and_distinct_buffers_allow_donation(self):
    state = _trained_state()
    new = A.reset_reference(state, ref_dtype=jnp.bfloat16)
    self.assertTrue(all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(new.ref_params)))
    for reset in (A.reset_reference, jax.jit(A.reset_reference)):
      fresh = reset(_trained_state())
      # Donating a state whose ref_params aliased params would fail with "donate the same buffer twice".
      step = jax.jit(lambda s: s.replace(step=s.step + 1), donate_argnums=0)
      self.assertEqual(int(step(fresh).step), 3 + 1)

  def test_kl_is_zero_right_after_a_reset(self):
    state = A.reset_reference(_trained_state())
    x = jnp.ones((4, 2))
    logp = jax.nn.log_softmax(x @ state.params["w"] + state.params["b"])
    ref = jax.nn.log_softmax(x @ state.ref_params["w"] + state.ref_params["b"])
    np.testing.assert_array_equal(A.kl_penalty(logp, ref, "k2"), 0.0)

  def test_bad_inputs(self):
    state = _trained_state()
    with self.assertRaisesRegex(ValueError, "optimizer"):
      A.reset_reference(state, reset_optimizer=True)
    with self.assertRaisesRegex(ValueError, "params"):
      A.reset_reference({"params": 1})
    with self.assertRaisesRegex(ValueError, "tree structure"):
      A.reset_reference(state, params={"w": state.params["w"]})
    with self.assertRaisesRegex(ValueError, "set_policy"):
      A.reset_reference(state, set_policy=True)


def _run(policy, events):
  """events: list of (step, val_score, kl); returns the reset steps with reasons and the final tracker."""
  tracker, resets = A.ResetTrackerState(), []
  for step, score, kl in events:
    reset, reasons, tracker = A.reset_decision(policy, tracker, step=step, val_score=score, kl=kl)
    if reset:
      resets.append((step, reasons))
  return resets, tracker


class ResetPolicyTest(parameterized.TestCase):

  def test_every_k_steps(self):
    resets, tracker = _run(A.ResetPolicy(every_k_steps=200), [(s, None, None) for s in range(1, 701)])
    self.assertEqual([s for s, _ in resets], [200, 400, 600])
    self.assertEqual(tracker.num_resets, 3)
    self.assertEqual(resets[0][1], ("periodic",))

  def test_patience_on_validation_stagnation(self):
    scores = [0.1, 0.2, 0.3, 0.3, 0.29, 0.3, 0.35, 0.35, 0.35, 0.35]
    resets, tracker = _run(A.ResetPolicy(patience=3), [(10 * (i + 1), s, None) for i, s in enumerate(scores)])
    self.assertEqual(resets, [(60, ("stagnation",)), (100, ("stagnation",))])
    self.assertAlmostEqual(tracker.best_score, 0.35)
    self.assertEqual(tracker.evals_since_improvement, 0)

  def test_min_delta_and_lower_is_better(self):
    policy = A.ResetPolicy(patience=2, min_delta=0.05, higher_is_better=False)
    resets, _ = _run(policy, [(1, 1.0, None), (2, 0.98, None), (3, 0.97, None), (4, 0.5, None)])
    self.assertEqual([s for s, _ in resets], [3])  # 0.98, 0.97 are not 0.05 better than 1.0

  def test_kl_spike_and_cooldown(self):
    policy = A.ResetPolicy(kl_threshold=0.1, min_steps_between_resets=5)
    # The run start counts as a reset (the reference is the initial policy), so step 2 is in the cooldown.
    events = [(1, None, 0.01), (2, None, 0.5), (6, None, 0.5), (8, None, 0.5), (10, None, 0.05), (11, None, 0.2)]
    resets, _ = _run(policy, events)
    self.assertEqual(resets, [(6, ("kl_spike",)), (11, ("kl_spike",))])

  def test_tracker_state_is_json_serialisable(self):
    _, tracker = _run(A.ResetPolicy(patience=2, every_k_steps=3), [(1, 0.5, None), (2, 0.4, None)])
    restored = A.ResetTrackerState.from_dict(json.loads(json.dumps(tracker.to_dict())))
    self.assertEqual(restored, tracker)
    self.assertEqual(A.ResetTrackerState.from_dict(A.ResetTrackerState().to_dict()), A.ResetTrackerState())

  @parameterized.parameters(({"every_k_steps": 0}, "every_k_steps"), ({"patience": -1}, "patience"),
                            ({"kl_threshold": 0.0}, "kl_threshold"))
  def test_bad_policy(self, kwargs, field):
    with self.assertRaisesRegex(ValueError, field):
      A.ResetPolicy(**kwargs)

  def test_nan_score_rejected(self):
    with self.assertRaisesRegex(ValueError, "val_score"):
      A.reset_decision(A.ResetPolicy(patience=1), A.ResetTrackerState(), step=1, val_score=float("nan"))
