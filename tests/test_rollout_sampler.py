"""The sampler against transformers `generate`, exact sampling distributions, and reproducibility."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from hf_fixtures import make_hf_model
from prorl_jax import models, rollout
from prorl_jax.models import decode_columns
from training_helpers import teacher_forced_logprobs

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [3, 4], [20, 21, 22, 23, 24], [9]]


def _saved_model(tmp_path_factory, name, **kw):
  """(torch model, config, params) of a random Qwen2 saved by transformers and loaded back."""
  path = tmp_path_factory.mktemp(name)
  torch_model = make_hf_model(path, num_attention_heads=4, num_key_value_heads=2, **kw)
  config, params = models.load_hf(path)
  return torch_model, config, params


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return _saved_model(tmp_path_factory, "sampler_model", vocab_size=128, std=0.3)


def _hf_greedy(torch_model, prompt, max_new, eos):
  import torch
  torch_model.generation_config.eos_token_id = eos
  out = torch_model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=max_new, do_sample=False, eos_token_id=eos, pad_token_id=0)
  return out[0, len(prompt):].tolist()


def test_greedy_equals_transformers_without_eos(tiny):
  torch_model, config, params = tiny
  ours = rollout.generate_tokens(config, params, PROMPTS, max_new_tokens=16, temperature=0, eos_token_id=[])
  for prompt, got in zip(PROMPTS, ours):
    assert len(got) == 16
    assert got == _hf_greedy(torch_model, prompt, 16, None)


def test_greedy_equals_transformers_with_eos_stops(tiny):
  torch_model, config, params = tiny
  free = rollout.generate_tokens(config, params, PROMPTS, max_new_tokens=16, temperature=0, eos_token_id=[])
  # EOS ids that occur mid-response in some rows but not others, so rows stop at different steps.
  eos = sorted({free[0][4], free[2][9]})
  ours = rollout.generate_tokens(config, params, PROMPTS, max_new_tokens=16, temperature=0, eos_token_id=eos)
  assert len({len(o) for o in ours}) > 1
  for prompt, got in zip(PROMPTS, ours):
    assert got == _hf_greedy(torch_model, prompt, 16, eos)
    if len(got) < 16:
      assert got[-1] in eos and not set(got[:-1]) & set(eos)


@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_both_decode_layouts_equal_transformers_with_eos_stops(tiny, layout):
  torch_model, config, params = tiny
  sampler = rollout.Sampler(config, decode_layout=layout)
  free = sampler.generate(params, PROMPTS, max_new_tokens=16, sampling=rollout.SamplingParams(temperature=0.0),
                          eos_token_ids=[])
  eos = sorted({free.response(0)[4], free.response(2)[9]})
  out = sampler.generate(params, PROMPTS, max_new_tokens=16, sampling=rollout.SamplingParams(temperature=0.0),
                         eos_token_ids=eos)
  assert len(set(out.lengths.tolist())) > 1
  for i, prompt in enumerate(PROMPTS):
    assert free.response(i) == _hf_greedy(torch_model, prompt, 16, None)
    assert out.response(i) == _hf_greedy(torch_model, prompt, 16, eos)


@pytest.fixture(scope="module")
def diverse(tmp_path_factory):
  """A model whose greedy responses keep producing new tokens for 100 steps (the `tiny` one soon cycles)."""
  return _saved_model(tmp_path_factory, "diverse_model", vocab_size=256, std=0.5)


def _stop_steps(responses, eos):
  """Where each free-running response would stop with `eos` (its length with the EOS token)."""
  return [next((j + 1 for j, t in enumerate(r) if t in eos), len(r)) for r in responses]


def test_phased_column_decode_equals_transformers_over_long_responses(diverse):
  """100 new tokens after prompts padded to 32 positions: the column loop runs three phases over caches of 66, 99
  and 132 positions; rows stopping by EOS in the first and in a later phase, and a row running to the end, match
  transformers token for token."""
  torch_model, config, params = diverse
  assert decode_columns.decode_windows(32, 132) == (66, 99, 132)
  sampler = rollout.Sampler(config, decode_layout="columns")
  greedy = rollout.SamplingParams(temperature=0.0)
  free = sampler.generate(params, PROMPTS, max_new_tokens=100, sampling=greedy, eos_token_ids=[])
  responses = [free.response(i) for i in range(len(PROMPTS))]
  for prompt, response in zip(PROMPTS, responses):
    assert response == _hf_greedy(torch_model, prompt, 100, None)
  # Row 0 has the longest prompt, so its position ends each phase (66 - 7 = 59 steps in the first).
  pairs = [[a, b] for a in set(responses[1]) for b in set(responses[2])]
  eos = next(e for e in pairs if (lambda s: s[0] == 100 and min(s) < 40 and 70 < max(s[1:]) < 100)(
      _stop_steps(responses, e)))
  out = sampler.generate(params, PROMPTS, max_new_tokens=100, sampling=greedy, eos_token_ids=eos)
  assert out.lengths.tolist() == _stop_steps(responses, eos)
  for i, prompt in enumerate(PROMPTS):
    assert out.response(i) == _hf_greedy(torch_model, prompt, 100, eos)


def test_decode_layout_is_checked(tiny):
  _, config, _ = tiny
  with pytest.raises(ValueError, match="decode_layout"):
    rollout.Sampler(config, decode_layout="cols")
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
  with pytest.raises(ValueError, match="one device"):
    rollout.Sampler(config, decode_layout="columns", mesh=mesh)


def test_rollout_batch_fields_and_early_exit(tiny):
  _, config, params = tiny
  free = rollout.generate_tokens(config, params, PROMPTS, max_new_tokens=8, temperature=0, eos_token_id=[])
  eos = [free[i][1] for i in range(len(PROMPTS))]  # every row stops by its second token
  sampler = rollout.Sampler(config)
  batch = sampler.generate(params, PROMPTS, max_new_tokens=64, sampling=rollout.SamplingParams(temperature=0),
                           eos_token_ids=eos)
  assert batch.finished_by_eos.all()
  assert (batch.lengths <= 2).all()
  assert batch.stats["decode_steps"] <= 2  # the loop left early instead of running 64 steps
  assert (batch.tokens[~batch.response_mask] == 0).all()
  assert (batch.logprobs[~batch.response_mask] == 0).all()
  truncated = sampler.generate(params, PROMPTS, max_new_tokens=3, sampling=rollout.SamplingParams(temperature=0),
                               eos_token_ids=[])
  assert not truncated.finished_by_eos.any() and (truncated.lengths == 3).all()


def test_logprobs_match_teacher_forced_forward(tiny):
  _, config, params = tiny
  temperature = 1.3
  batch = rollout.Sampler(config).generate(params, PROMPTS, max_new_tokens=10, num_samples=2, eos_token_ids=[],
                                           sampling=rollout.SamplingParams(temperature=temperature), seed=3)
  rows = range(len(batch.lengths))
  responses = [batch.response(row) for row in rows]
  expected = teacher_forced_logprobs(config, params, [PROMPTS[batch.prompt_index[row]] for row in rows], responses,
                                     temperature)
  for row, response in zip(rows, responses):
    np.testing.assert_allclose(batch.logprobs[row, :len(response)], expected[row, :len(response)], atol=1e-4)


def test_same_seed_same_tokens_and_chunking_invariance(tiny):
  _, config, params = tiny
  sampling = rollout.SamplingParams(temperature=1.0, top_p=0.9, top_k=20)
  kw = dict(max_new_tokens=12, sampling=sampling, num_samples=3, eos_token_ids=[7])
  a = rollout.Sampler(config).generate(params, PROMPTS, seed=11, **kw)
  b = rollout.Sampler(config).generate(params, PROMPTS, seed=11, **kw)
  chunked = rollout.Sampler(config, max_rows_per_chunk=3).generate(params, PROMPTS, seed=11, **kw)
  other = rollout.Sampler(config).generate(params, PROMPTS, seed=12, **kw)
  assert chunked.stats["chunks"] == 4
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.tokens, chunked.tokens)
  np.testing.assert_array_equal(a.lengths, chunked.lengths)
  assert not np.array_equal(a.tokens, other.tokens)
  # Samples of one prompt differ from each other.
  assert len({tuple(a.response(r)) for r in range(3)}) > 1


def test_shared_prefill_equals_repeated_prompts(tiny):
  _, config, params = tiny
  sampling = rollout.SamplingParams(temperature=1.0)
  n = 3
  shared = rollout.Sampler(config).generate(params, PROMPTS, max_new_tokens=9, sampling=sampling, num_samples=n,
                                            eos_token_ids=[], seed=5)
  repeated = [p for p in PROMPTS for _ in range(n)]
  separate = rollout.Sampler(config).generate(params, repeated, max_new_tokens=9, sampling=sampling,
                                              eos_token_ids=[], seed=5)
  np.testing.assert_array_equal(shared.tokens, separate.tokens)
  np.testing.assert_allclose(shared.logprobs, separate.logprobs, atol=1e-5)


def test_bf16_sampling_runs(tiny):
  _, config, params = tiny
  c16 = config.replace(dtype="bfloat16")
  p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  batch = rollout.Sampler(c16).generate(p16, PROMPTS, max_new_tokens=6, eos_token_ids=[],
                                        sampling=rollout.SamplingParams(temperature=0.7))
  assert batch.tokens.shape == (4, 6)
  assert np.isfinite(batch.logprobs).all() and (batch.logprobs <= 0).all()
  fp32 = rollout.generate_tokens(config, params, PROMPTS, max_new_tokens=1, temperature=0, eos_token_id=[])
  bf16 = rollout.generate_tokens(c16, p16, PROMPTS, max_new_tokens=1, temperature=0, eos_token_id=[])
  assert np.mean([a == b for a, b in zip(fp32, bf16)]) >= 0.75


def test_bad_arguments_are_clear(tiny):
  _, config, params = tiny
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    rollout.generate_tokens(config, params, [[1], []], max_new_tokens=2)
  with pytest.raises(ValueError, match="top_p"):
    rollout.generate_tokens(config, params, [[1]], max_new_tokens=2, top_p=0.0)
  with pytest.raises(ValueError, match="max_new_tokens"):
    rollout.generate_tokens(config, params, [[1]], max_new_tokens=0)


# --- Sampling distributions on a tiny vocabulary: chi-square against the exact probabilities. -------------------

LOGITS = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0], np.float32)


def _exact(temperature, top_k, top_p):
  z = LOGITS / temperature
  p = np.exp(z - z.max())
  p /= p.sum()
  order = np.argsort(-p)
  keep = np.zeros_like(p, bool)
  mass = 0.0
  for rank, i in enumerate(order):
    if (top_k and rank >= top_k) or mass >= top_p:
      break
    keep[i] = True
    mass += p[i]
  q = np.where(keep, p, 0)
  return q / q.sum()


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.5, 0, 1.0), (1.7, 0, 1.0),
                                                     (1.0, 3, 1.0), (1.0, 0, 0.8), (0.8, 5, 0.9)])
def test_sampling_distribution_chi_square(temperature, top_k, top_p):
  draws = 20000
  params = rollout.SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
  keys = jax.random.split(jax.random.key(0), draws)
  logits = jnp.broadcast_to(jnp.asarray(LOGITS), (draws, LOGITS.size))
  tokens, logprobs = jax.jit(rollout.select_tokens, static_argnums=2)(logits, keys, params)
  counts = np.bincount(np.asarray(tokens), minlength=LOGITS.size)
  expected = _exact(temperature, top_k, top_p).astype(np.float64)
  assert (counts[expected == 0] == 0).all(), "a filtered-out token was sampled"
  support = expected > 0
  f_exp = expected[support] / expected[support].sum() * counts.sum()
  _, pvalue = scipy.stats.chisquare(counts[support], f_exp)
  assert pvalue > 1e-3, (counts, expected * draws)
  # Log-probs are those of the temperature-scaled, untruncated distribution.
  full = jax.nn.log_softmax(jnp.asarray(LOGITS) / temperature)
  np.testing.assert_allclose(np.asarray(logprobs), np.asarray(full)[np.asarray(tokens)], atol=1e-5)


def test_greedy_select_is_argmax():
  logits = jnp.asarray(np.random.RandomState(0).randn(5, 11).astype(np.float32))
  tokens, _ = rollout.select_tokens(logits, jax.random.split(jax.random.key(0), 5), rollout.SamplingParams(0.0))
  np.testing.assert_array_equal(np.asarray(tokens), np.argmax(np.asarray(logits), -1))
