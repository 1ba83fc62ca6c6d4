"""The sharded training step equals the one-device step: loss, gradient norm and updated params (8 CPU devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prorl_jax import models, parallel
from prorl_jax.training import state as state_lib
from prorl_jax.training import update
from prorl_jax.training import micro_batches
from training_helpers import small_model_config, small_optimizer, step_functions

PROMPT, RESPONSE, ROWS = 8, 8, 16
PLAN = micro_batches.equal_plan(ROWS, 8, PROMPT, RESPONSE)  # two micro-batches of 8 rows, accumulated


def _batch(config, params, logprobs_fn):
  """Left-padded prompts, right-padded responses; old/ref log-probs perturbed so clipping and KL are active."""
  rng = np.random.RandomState(0)
  ids = rng.randint(2, config.vocab_size, size=(ROWS, PROMPT + RESPONSE)).astype(np.int32)
  prompt_lens = rng.randint(2, PROMPT + 1, size=ROWS)
  resp_lens = rng.randint(1, RESPONSE + 1, size=ROWS)
  cols = np.arange(PROMPT + RESPONSE)[None]
  mask = (cols >= PROMPT - prompt_lens[:, None]) & (cols < PROMPT + resp_lens[:, None])
  ids = np.where(mask, ids, 0)
  resp_mask = (np.arange(RESPONSE)[None] < resp_lens[:, None]).astype(np.float32)
  logp = np.asarray(logprobs_fn(params, ids, mask))
  old = logp + rng.normal(0, 0.3, logp.shape).astype(np.float32)
  ref = logp + rng.normal(0, 0.3, logp.shape).astype(np.float32)
  adv = rng.normal(size=(ROWS, RESPONSE)).astype(np.float32) * resp_mask
  return update.TrainBatch(input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                           response_mask=jnp.asarray(resp_mask), advantages=jnp.asarray(adv),
                           old_logp=jnp.asarray(old * resp_mask), ref_logp=jnp.asarray(ref * resp_mask))


@pytest.fixture(scope="module")
def setup():
  config = small_model_config()
  # Host copies: the update donates its state, and device_put onto the array's own device would alias it.
  params = jax.device_get(models.init_params(config, jax.random.key(0)))
  settings = update.LossSettings(prompt_len=PROMPT, kl_coef=0.1, kl_estimator="k2", chunk_size=5)
  optimizer = small_optimizer()
  fns = step_functions(config, settings, optimizer)
  batch = _batch(config, params, fns.logprobs)
  one = jax.devices()[0]
  state = jax.device_put(state_lib.create_train_state(params, optimizer, seed=0), one)
  new_state, metrics = fns.update(state, jax.device_put(batch, one), PLAN)
  expected_logp = fns.logprobs(new_state.params, batch.input_ids, batch.attention_mask)
  return config, params, settings, optimizer, batch, jax.device_get((new_state, metrics, expected_logp))


@pytest.mark.parametrize("mesh_sizes", [
    dict(data=1, fsdp=4, tensor=2), dict(data=2, fsdp=4, tensor=1),
    # 2 kv heads over tensor=4: k/v projections fall back to replication over tensor.
    pytest.param(dict(data=2, fsdp=1, tensor=4), marks=pytest.mark.slow)])
def test_sharded_update_equals_single_device(setup, mesh_sizes):
  config, params, settings, optimizer, batch, (want_state, want_metrics, want_logp) = setup
  mesh = parallel.make_mesh(mesh_sizes)
  state = state_lib.create_train_state(params, optimizer, seed=0)
  state_sharding = parallel.train_state_shardings(config, state, optimizer, mesh)
  batch_sharding = parallel.rows_shardings(batch, mesh)
  state = jax.device_put(state, state_sharding)
  fns = step_functions(config, settings, optimizer, mesh)
  new_state, metrics = fns.update(state, jax.device_put(batch, batch_sharding), PLAN)
  # The update really ran sharded: params keep the rule's layout, e.g. q_proj [H, Hq*D] over (fsdp, tensor).
  q = new_state.params["layers_0"]["self_attn"]["q_proj"]["kernel"]
  assert q.sharding.spec == parallel.param_specs(config, params, mesh)["layers_0"]["self_attn"]["q_proj"]["kernel"]
  assert q.addressable_shards[0].data.shape == (64 // mesh_sizes["fsdp"], 64 // mesh_sizes["tensor"])
  mu = new_state.opt_state[1][0].mu["layers_0"]["mlp"]["down_proj"]["kernel"]
  assert mu.sharding.spec == new_state.params["layers_0"]["mlp"]["down_proj"]["kernel"].sharding.spec
  for name in ("loss", "pg_loss", "kl_loss", "grad_norm", "pg_clipfrac", "ppo_kl"):
    np.testing.assert_allclose(float(metrics[name]), float(want_metrics[name]), rtol=1e-5, atol=1e-6, err_msg=name)
  assert float(want_metrics["pg_clipfrac"]) > 0 and float(want_metrics["kl_loss"]) > 0  # the checks are not vacuous
  got = jax.device_get(new_state)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), got.params, want_state.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), got.opt_state,
               want_state.opt_state)
  assert int(got.step) == int(want_state.step)
  # Sharded log-probs (the old/ref policy forward) agree too.
  logp = fns.logprobs(new_state.params, jax.device_put(batch.input_ids, batch_sharding.input_ids),
                      jax.device_put(batch.attention_mask, batch_sharding.attention_mask))
  np.testing.assert_allclose(np.asarray(logp), want_logp, rtol=1e-5, atol=1e-6)
  # Params actually moved (so equal params are not equal because nothing happened).
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), got.params, jax.device_get(params))
  assert max(jax.tree.leaves(moved)) > 1e-4
