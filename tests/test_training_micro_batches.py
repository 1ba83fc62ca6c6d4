"""Length-bucketed micro-batches: the plan covers every row at widths it fits, and the trimmed update and log-probs
equal the padded ones (one device and an 8-device mesh)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prorl_jax import models, parallel
from prorl_jax.training import micro_batches, update
from prorl_jax.training import state as state_lib
from training_helpers import small_model_config, small_optimizer, step_functions

PROMPT, RESPONSE, ROWS = 20, 48, 16


def test_bucket_width_quarter_octaves():
  got = [micro_batches.bucket_width(n, 1000, 4) for n in (1, 16, 17, 20, 21, 32, 33, 40, 57, 64, 65, 120, 190)]
  assert got == [16, 16, 20, 20, 24, 32, 40, 40, 64, 64, 80, 128, 192]
  assert micro_batches.bucket_width(190, 150, 4) == 150  # capped at the full width
  assert micro_batches.bucket_width(3, 8, 4) == 8  # never below the length, never above the limit
  assert micro_batches.bucket_width(37, 1000, 0) == 1000  # 0 buckets = no trimming
  assert micro_batches.bucket_width(37, 1000, 1) == 64  # powers of two
  for per_octave in (1, 2, 4, 8):
    for n in range(1, 600):
      w = micro_batches.bucket_width(n, 512, per_octave)
      assert n <= w <= 512 or (n > 512 and w == 512)
      if n > micro_batches.MIN_WIDTH and w < 512:
        assert (w - n) / w < 1 / per_octave + 1e-9  # at most 1/per_octave of a bucket is padding
  widths = {micro_batches.bucket_width(n, 8192, 4) for n in range(1, 8193)}
  assert len(widths) <= 4 * 10  # few distinct shapes (compilations) over a whole run


def _lengths(rng):
  return rng.randint(1, PROMPT + 1, size=ROWS), rng.randint(1, RESPONSE + 1, size=ROWS)


def _masks(prompt_lens, resp_lens):
  cols = np.arange(PROMPT + RESPONSE)[None]
  mask = (cols >= PROMPT - prompt_lens[:, None]) & (cols < PROMPT + resp_lens[:, None])
  resp_mask = (np.arange(RESPONSE)[None] < resp_lens[:, None]).astype(np.float32)
  return mask, resp_mask


@pytest.mark.parametrize("micro", [0, 2, 4, 8])
def test_plan_covers_every_row_at_a_width_it_fits(micro):
  prompt_lens, resp_lens = _lengths(np.random.RandomState(micro))
  resp_lens[3] = 0  # an empty response still gets a row
  mask, resp_mask = _masks(prompt_lens, resp_lens)
  plan = micro_batches.plan_micro_batches(mask, resp_mask, PROMPT, micro, per_octave=4)
  rows = np.concatenate([mb.rows for mb in plan])
  np.testing.assert_array_equal(np.sort(rows), np.arange(ROWS))
  for mb in plan:
    assert len(mb.rows) == (micro or ROWS)
    assert mb.prompt_width >= prompt_lens[mb.rows].max() and mb.prompt_width <= PROMPT
    assert mb.response_width >= resp_lens[mb.rows].max() and mb.response_width <= RESPONSE
  if micro == 4:
    # Sorted by length: the short half of the rows lands in narrower micro-batches than the long half.
    widths = sorted(mb.response_width for mb in plan)
    assert widths[0] < widths[-1]
    before, after = micro_batches.padded_fraction(plan, mask)
    assert after < before


def test_plan_without_buckets_keeps_rows_in_order_at_full_width():
  mask, resp_mask = _masks(*_lengths(np.random.RandomState(0)))
  plan = micro_batches.plan_micro_batches(mask, resp_mask, PROMPT, 4, per_octave=0)
  assert [mb.rows.tolist() for mb in plan] == [list(range(s, s + 4)) for s in range(0, ROWS, 4)]
  assert {(mb.prompt_width, mb.response_width) for mb in plan} == {(PROMPT, RESPONSE)}


def test_plan_rejects_bad_shapes():
  mask, resp_mask = _masks(*_lengths(np.random.RandomState(0)))
  with pytest.raises(ValueError, match="micro-batches of 5"):
    micro_batches.plan_micro_batches(mask, resp_mask, PROMPT, 5, per_octave=4)
  with pytest.raises(ValueError, match="prompt_len=19"):
    micro_batches.plan_micro_batches(mask, resp_mask, PROMPT - 1, 4, per_octave=4)


def _batch(config, params, fns):
  rng = np.random.RandomState(1)
  prompt_lens, resp_lens = _lengths(rng)
  resp_lens[:6] = rng.randint(1, 12, size=6)  # a cluster of short responses, as RL batches have
  mask, resp_mask = _masks(prompt_lens, resp_lens)
  ids = np.where(mask, rng.randint(2, config.vocab_size, size=mask.shape), 0).astype(np.int32)
  logp = np.asarray(fns.logprobs(params, ids, mask))
  old = (logp + rng.normal(0, 0.3, logp.shape)) * resp_mask
  ref = (logp + rng.normal(0, 0.3, logp.shape)) * resp_mask
  adv = rng.normal(size=(ROWS, RESPONSE)) * resp_mask
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return update.TrainBatch(input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                           response_mask=f32(resp_mask), advantages=f32(adv), old_logp=f32(old), ref_logp=f32(ref))


def _settings(agg_mode="token-mean", entropy_coef=0.0):
  return update.LossSettings(prompt_len=PROMPT, kl_coef=0.1, kl_estimator="k2", chunk_size=7, agg_mode=agg_mode,
                             entropy_coef=entropy_coef)


def _padded_update(config, params, settings, optimizer, batch, micro):
  """The reference: equal micro-batches of rows in order, at full width (no trimming)."""
  fns = step_functions(config, settings, optimizer)
  state = state_lib.create_train_state(params, optimizer, seed=0)
  return jax.device_get(fns.update(state, batch, micro_batches.equal_plan(ROWS, micro, PROMPT, RESPONSE)))


@pytest.fixture(scope="module")
def model():
  config = small_model_config()
  params = jax.device_get(models.init_params(config, jax.random.key(0)))
  optimizer = small_optimizer()
  batch = _batch(config, params, step_functions(config, _settings(), optimizer))
  return config, params, optimizer, batch


def _assert_same_update(got, want):
  (got_state, got_m), (want_state, want_m) = got, want
  for name in update.AUX_METRICS + ("grad_norm",):
    np.testing.assert_allclose(float(got_m[name]), float(want_m[name]), rtol=1e-5, atol=1e-6, err_msg=name)
  assert float(want_m["pg_clipfrac"]) > 0 and float(want_m["kl_loss"]) > 0  # not vacuous
  # Adam divides by sqrt(v): for entries with near-zero gradients, float summation-order differences (sorted rows,
  # sharded sums) move the update by up to ~1e-5 of lr = 1e-3; a wrong gradient would move it by ~lr.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=3e-5), jax.device_get(got_state.params),
               want_state.params)


@pytest.mark.parametrize("agg_mode,entropy_coef,micro", [
    ("token-mean", 0.0, 4), ("token-mean", 0.01, 0),
    pytest.param("seq-mean-token-mean", 0.0, 2, marks=pytest.mark.slow),
    # The aggregation modes themselves are checked against verl in test_algorithms_*; here the plan is under test.
    pytest.param("seq-mean-token-sum", 0.0, 8, marks=pytest.mark.slow),
    pytest.param("seq-mean-token-sum-norm", 0.0, 4, marks=pytest.mark.slow)])
def test_trimmed_update_equals_padded(model, agg_mode, entropy_coef, micro):
  config, params, optimizer, batch = model
  settings = _settings(agg_mode, entropy_coef)
  want = _padded_update(config, params, settings, optimizer, batch, micro)
  fns = step_functions(config, settings, optimizer)
  plan = micro_batches.plan_micro_batches(np.asarray(batch.attention_mask), np.asarray(batch.response_mask), PROMPT,
                                          micro, per_octave=4)
  assert micro == 0 or any(mb.response_width < RESPONSE for mb in plan)  # something was trimmed
  got = fns.update(state_lib.create_train_state(params, optimizer, seed=0), batch, plan)
  _assert_same_update(got, want)


def test_trimmed_logprobs_equal_padded_on_response_tokens(model):
  config, params, optimizer, batch = model
  fns = step_functions(config, _settings(entropy_coef=0.01), optimizer)
  plan = micro_batches.plan_micro_batches(np.asarray(batch.attention_mask), np.asarray(batch.response_mask), PROMPT,
                                          4, per_octave=4)
  want_lp, want_ent = fns.logprobs_entropy(params, batch.input_ids, batch.attention_mask)
  got_lp, got_ent = fns.logprobs_entropy(params, batch.input_ids, batch.attention_mask, plan)
  lp = fns.logprobs(params, batch.input_ids, batch.attention_mask, plan)
  m = np.asarray(batch.response_mask) > 0
  chex.assert_shape([got_lp, got_ent, lp], (ROWS, RESPONSE))
  np.testing.assert_allclose(np.asarray(got_lp)[m], np.asarray(want_lp)[m], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(got_ent)[m], np.asarray(want_ent)[m], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(lp), np.asarray(got_lp))


@pytest.mark.parametrize("mesh_sizes", [dict(data=1, fsdp=4, tensor=2),
                                        pytest.param(dict(data=2, fsdp=4, tensor=1), marks=pytest.mark.slow)])
def test_sharded_trimmed_update_equals_single_device_padded(model, mesh_sizes):
  config, params, optimizer, batch = model
  settings = _settings()
  want = _padded_update(config, params, settings, optimizer, batch, 8)
  mesh = parallel.make_mesh(mesh_sizes)
  state = state_lib.create_train_state(params, optimizer, seed=0)
  state_sharding = parallel.train_state_shardings(config, state, optimizer, mesh)
  batch_sharding = parallel.rows_shardings(batch, mesh)
  fns = step_functions(config, settings, optimizer, mesh)
  plan = micro_batches.plan_micro_batches(np.asarray(batch.attention_mask), np.asarray(batch.response_mask), PROMPT,
                                          8, per_octave=4)
  placed = jax.device_put(batch, batch_sharding)
  got_lp = fns.logprobs(jax.device_put(params, state_sharding.params), placed.input_ids, placed.attention_mask, plan)
  assert got_lp.sharding.is_equivalent_to(batch_sharding.old_logp, 2)
  new_state, metrics = fns.update(jax.device_put(state, state_sharding), placed, plan)
  q = new_state.params["layers_0"]["self_attn"]["q_proj"]["kernel"]
  assert q.sharding.spec == parallel.param_specs(config, params, mesh)["layers_0"]["self_attn"]["q_proj"]["kernel"]
  _assert_same_update((new_state, metrics), want)


def _invariance_plans():
  """Ways the same rows can be laid out: one full-width micro-batch, equal micro-batches of 2 and 4 rows, length
  buckets of 4 rows, and reversed row order in micro-batches of 2."""
  rev = np.arange(ROWS, dtype=np.int32)[::-1]
  return {
      "one": micro_batches.equal_plan(ROWS, ROWS, PROMPT, RESPONSE),
      "pairs": micro_batches.equal_plan(ROWS, 2, PROMPT, RESPONSE),
      "quads": micro_batches.equal_plan(ROWS, 4, PROMPT, RESPONSE),
      "reversed_pairs": [micro_batches.MicroBatch(rev[i:i + 2], PROMPT, RESPONSE) for i in range(0, ROWS, 2)],
  }


def test_training_logprobs_are_batch_invariant(model):
  """A row's log-probs do not depend on the micro-batch it lands in, its neighbours or the micro-batch size
  (bitwise, CPU float32); with bucketed widths the same up to float rounding (reported in the README)."""
  config, params, optimizer, batch = model
  fns = step_functions(config, _settings(), optimizer)
  args = (params, batch.input_ids, batch.attention_mask)
  m = np.asarray(batch.response_mask) > 0
  got = {name: np.asarray(fns.logprobs(*args, plan))[m] for name, plan in _invariance_plans().items()}
  for name, value in got.items():
    np.testing.assert_array_equal(value, got["one"], err_msg=name)
  bucketed = micro_batches.plan_micro_batches(np.asarray(batch.attention_mask), np.asarray(batch.response_mask),
                                              PROMPT, 4, per_octave=4)
  trimmed = np.asarray(fns.logprobs(*args, bucketed))[m]
  np.testing.assert_allclose(trimmed, got["one"], rtol=0, atol=1e-5)


def test_training_logprobs_do_not_depend_on_the_mesh(model):
  config, params, optimizer, batch = model
  one = np.asarray(step_functions(config, _settings(), optimizer).logprobs(params, batch.input_ids,
                                                                           batch.attention_mask))
  mesh = parallel.make_mesh(dict(data=2, fsdp=2, tensor=2))
  fns = step_functions(config, _settings(), optimizer, mesh)
  state = state_lib.create_train_state(params, optimizer, seed=0)
  shardings = parallel.train_state_shardings(config, state, optimizer, mesh)
  rows = parallel.rows_shardings(batch, mesh)
  placed = jax.device_put(batch, rows)
  sharded = np.asarray(fns.logprobs(jax.device_put(params, shardings.params), placed.input_ids,
                                    placed.attention_mask))
  m = np.asarray(batch.response_mask) > 0
  np.testing.assert_allclose(sharded[m], one[m], rtol=0, atol=2e-5)


def test_first_update_is_exactly_on_policy(model):
  """Old log-probs from the log-prob pass agree with the update's own forward only to float rounding (two XLA
  programs); `on_policy=True` (a step's first update) takes the current log-probs, detached, for them: the ratio is
  exactly 1, nothing is clipped, and the update is the same up to that rounding."""
  config, params, optimizer, batch = model
  fns = step_functions(config, _settings(), optimizer)
  plan = micro_batches.equal_plan(ROWS, 8, PROMPT, RESPONSE)  # one shape: one compilation of each program
  old = fns.logprobs(params, batch.input_ids, batch.attention_mask, plan)
  fresh = lambda: state_lib.create_train_state(params, optimizer, seed=0)
  exact = batch.replace(old_logp=old)
  off = jax.device_get(fns.update(fresh(), exact, plan))
  on = jax.device_get(fns.update(fresh(), exact, plan, on_policy=True))
  for name in ("ppo_kl", "pg_clipfrac", "pg_clipfrac_lower", "clipfrac_high", "clipfrac_low"):
    assert float(on[1][name]) == 0.0, name
  assert abs(float(off[1]["ppo_kl"])) < 1e-6  # the same policy, rounded differently
  for name in ("loss", "pg_loss", "kl_loss", "grad_norm"):
    np.testing.assert_allclose(float(on[1][name]), float(off[1][name]), rtol=1e-5, atol=1e-6, err_msg=name)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=3e-5), on[0].params, off[0].params)
  # The batch's old log-probs are not read: stale ones give the same update, bit for bit.
  stale = jax.device_get(fns.update(fresh(), batch, plan, on_policy=True))
  jax.tree.map(np.testing.assert_array_equal, stale[0].params, on[0].params)
  assert float(jax.device_get(fns.update(fresh(), batch, plan))[1]["pg_clipfrac"]) > 0  # they would be clipped
