"""Continuous batching against static batching (same tokens for the same seed), refill bookkeeping against rows
generated alone, log-probs against the model's own scoring, and the decoder chosen once per sampler."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from prorl_jax import models, parallel, rollout
from training_helpers import teacher_forced_logprobs

RNG = np.random.RandomState(7)
# Prompts of different lengths; more rows than slots in most cases below.
PROMPTS = [RNG.randint(3, 96, size=RNG.randint(1, 23)).tolist() for _ in range(15)]


@pytest.fixture(scope="module")
def model():
  config = models.Qwen2Config(vocab_size=96, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, initializer_range=0.3,
                              max_position_embeddings=256)
  return config, models.init_params(config, jax.random.key(3))


@pytest.fixture(autouse=True)
def drain_on_short_responses(monkeypatch):
  """The drain's smaller slot counts are skipped below DRAIN_MIN_TOKENS (compile cost); these tests' responses are
  short, so they lower it to exercise the drain everywhere."""
  monkeypatch.setattr(rollout.sampler, "DRAIN_MIN_TOKENS", 0)


def _eos(n: int):
  return list(range(3, 3 + n))  # a random model draws roughly uniformly: n ids out of 96 end ~n/96 of the steps


def _run(config, params, batching, *, slots=None, samples=3, temperature=1.0, eos=8, max_new=24, mesh=None,
         seed=11, **kw):
  sampler = rollout.Sampler(config, batching=batching, max_rows_per_chunk=slots, mesh=mesh, **kw)
  return sampler.generate(params, PROMPTS, max_new_tokens=max_new, num_samples=samples, eos_token_ids=_eos(eos),
                          sampling=rollout.SamplingParams(temperature=temperature), seed=seed)


def _same(a, b):
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.lengths, b.lengths)
  np.testing.assert_array_equal(a.finished_by_eos, b.finished_by_eos)
  np.testing.assert_array_equal(a.prompt_index, b.prompt_index)
  # XLA:CPU's own dot (no native kernels) may round a row differently in batches of other sizes (README,
  # "Rollouts"); the tokens above are identical all the same.
  np.testing.assert_allclose(a.logprobs, b.logprobs, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
# 3 slots (many refills) and None (every row at once) in the default suite; 6 and 12 slots in the slow one.
@pytest.mark.parametrize("slots", [3, pytest.param(6, marks=pytest.mark.slow),
                                   pytest.param(12, marks=pytest.mark.slow), None])
def test_continuous_equals_static(model, temperature, slots):
  config, params = model
  static = _run(config, params, "static", temperature=temperature)
  cont = _run(config, params, "continuous", slots=slots, temperature=temperature)
  _same(cont, static)
  assert cont.stats["batching"] == "continuous" and static.stats["batching"] == "static"
  assert (cont.lengths == 24).any() and (cont.lengths < 24).any()  # rows that hit the cap, rows that ended early
  if slots is not None and slots < 45:
    assert cont.stats["prefills"] > cont.stats["slots"] // 3  # rows entered as others left
  assert 0 < cont.stats["slot_occupancy"] <= 1 and cont.stats["decode_steps"] > 0


def test_rows_ending_at_their_first_token_and_fewer_rows_than_slots(model):
  config, params = model
  static = _run(config, params, "static", eos=60, samples=2)  # most rows end within a few tokens
  cont = _run(config, params, "continuous", eos=60, samples=2, slots=4)
  _same(cont, static)
  assert (cont.lengths == 1).any()
  few = _run(config, params, "continuous", eos=60, samples=2, slots=200)  # one fill holds every row
  _same(few, static)
  assert few.stats["prefills"] == 1


def test_many_more_rows_than_slots(model):
  config, params = model
  static = _run(config, params, "static", samples=6, slots=12)
  cont = _run(config, params, "continuous", samples=6, slots=12)  # 90 rows through 12 slots (2 prompts)
  _same(cont, static)
  assert cont.stats["slots"] == 12 and cont.stats["decode_steps"] < static.stats["decode_steps"]
  assert cont.stats["slot_occupancy"] > static.stats["slot_occupancy"]
  assert cont.stats["shrinks"] > 0 and static.stats["shrinks"] == 0  # the drain ran on fewer slots


# Smaller and larger than a prompt's samples in the default suite; exactly one prompt's in the slow one.
@pytest.mark.parametrize("refill_fraction", [1 / 12, pytest.param(0.5, marks=pytest.mark.slow), 1.0])
def test_inserts_smaller_and_larger_than_a_prompts_samples(model, refill_fraction):
  """One prompt's 6 samples inserted a row at a time (a prefilled group waits on the device), or 6 and 12 at once."""
  config, params = model
  static = _run(config, params, "static", samples=6, slots=12)
  cont = _run(config, params, "continuous", samples=6, slots=12, refill_fraction=refill_fraction)
  _same(cont, static)
  assert cont.stats["refill_rows"] == max(1, round(12 * refill_fraction))
  assert cont.stats["inserts"] >= 90 // cont.stats["refill_rows"] - 12 // cont.stats["refill_rows"]


def test_short_responses_keep_their_slots(model, monkeypatch):
  config, params = model
  monkeypatch.setattr(rollout.sampler, "DRAIN_MIN_TOKENS", 25)
  cont = _run(config, params, "continuous", samples=6, slots=12)
  assert cont.stats["shrinks"] == 0
  _same(cont, _run(config, params, "static", samples=6, slots=12))


def test_slot_plan_sizes():
  plan = rollout.SlotPlan(slots=48, fill_prompts=16, refill_prompts=1, refill_rows=6, prompt_len=32,
                                windows=(64,), continuous=True, min_slots=4)
  assert plan.slot_sizes() == (48, 24, 12)  # halvings that stay multiples of the 4 row shards
  static = rollout.SlotPlan(slots=48, fill_prompts=16, refill_prompts=16, refill_rows=48, prompt_len=32,
                                  windows=(64,), continuous=False, min_slots=48)
  assert static.slot_sizes() == (48,)


def test_each_row_as_if_generated_alone(model):
  """No row lost, duplicated or mixed up: every row equals that prompt generated by itself with its row id."""
  config, params = model
  cont = _run(config, params, "continuous", slots=4, samples=2)
  sampler = rollout.Sampler(config, batching="static")
  for p in (0, 5, 14):
    alone = sampler.generate(params, [PROMPTS[p]], max_new_tokens=24, num_samples=2, eos_token_ids=_eos(8),
                             sampling=rollout.SamplingParams(temperature=1.0), seed=11, row_ids=[2 * p, 2 * p + 1])
    np.testing.assert_array_equal(cont.tokens[2 * p:2 * p + 2], alone.tokens)
    np.testing.assert_allclose(cont.logprobs[2 * p:2 * p + 2], alone.logprobs, rtol=1e-5, atol=2e-5)


# The row layout is the slow one on CPU (the column layout is what a CPU run uses); it runs in the slow suite.
@pytest.mark.parametrize("layout", [pytest.param("rows", marks=pytest.mark.slow), "columns"])
def test_logprobs_are_the_models_scoring_of_the_tokens(model, layout):
  config, params = model
  cont = rollout.Sampler(config, decode_layout=layout, max_rows_per_chunk=4).generate(
      params, PROMPTS[:4], max_new_tokens=12, num_samples=2, eos_token_ids=_eos(8),
      sampling=rollout.SamplingParams(temperature=0.7), seed=3)
  responses = [cont.tokens[r, :int(cont.lengths[r])].tolist() for r in range(8)]
  want = teacher_forced_logprobs(config, params, [PROMPTS[r // 2] for r in range(8)], responses, 0.7)
  for r, response in enumerate(responses):
    n = len(response)
    np.testing.assert_allclose(cont.logprobs[r, :n], want[r, :n], atol=2e-5)
    assert not cont.logprobs[r, n:].any() and (cont.tokens[r, n:] == 0).all()


def test_continuous_equals_static_under_a_mesh(model):
  config, params = model
  mesh = parallel.make_mesh(dict(data=2, fsdp=2, tensor=2))
  static = _run(config, params, "static", mesh=mesh, slots=16)
  cont = _run(config, params, "continuous", mesh=mesh, slots=16)
  _same(cont, static)
  assert cont.stats["slots"] % 4 == 0 and cont.stats["decode_layout"] == "rows"
  assert cont.stats["shrinks"] > 0 and cont.stats["refill_rows"] % 4 == 0  # whole row shards
  _same(cont, _run(config, params, "continuous"))  # and the one-device (column layout) sampler


def test_pallas_kernel_in_interpret_mode_under_a_mesh(model):
  config, params = model
  mesh = Mesh(np.asarray(jax.devices()[:2]), ("data",))
  pallas = config.replace(attention_impl="pallas")
  cont = _run(pallas, params, "continuous", mesh=mesh, slots=4, samples=2, max_new=10)
  _same(cont, _run(config, params, "static", samples=2, max_new=10))


def test_decoder_is_chosen_once_and_reported(model):
  config, _ = model
  one = rollout.Sampler(config)
  assert one.decoder.name == "columns" and one.resolved_decode_layout == "columns"  # one CPU device
  mesh = Mesh(np.asarray(jax.devices()[:2]), ("data",))
  assert rollout.Sampler(config, mesh=mesh).decoder.name == "rows"
  assert rollout.Sampler(config, decode_layout="rows").decoder.name == "rows"
  with pytest.raises(ValueError, match="batching"):
    rollout.Sampler(config, batching="dynamic")
  with pytest.raises(ValueError, match="refill_fraction"):
    rollout.Sampler(config, refill_fraction=0)
