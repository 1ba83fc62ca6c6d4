"""The sampler's argmax against numpy (ties, infinities, NaN rows), with and without jit; the vocabulary-major
selection against numpy and against `select_tokens` on the transposed logits."""

import chex
import jax.numpy as jnp
import numpy as np

import jax
import pytest
import scipy.stats

from prorl_jax.rollout.sampling import SamplingParams, first_argmax, select_tokens, select_tokens_vocab_major


class FirstArgmaxTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_argmax_including_ties(self):
    rng = np.random.RandomState(0)
    x = rng.randint(0, 5, size=(64, 37)).astype(np.float32)  # Many ties: argmax takes the first.
    x[3] = -np.inf
    x[4, 10:] = np.inf
    got = self.variant(first_argmax)(jnp.asarray(x))
    chex.assert_shape(got, (64,))
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(got), np.argmax(x, axis=-1))

  @chex.variants(with_jit=True, without_jit=True)
  def test_nan_row_gives_a_valid_id(self):
    x = jnp.full((2, 7), jnp.nan).at[1].set(jnp.arange(7.0))
    got = np.asarray(self.variant(first_argmax)(x))
    assert 0 <= got[0] < 7 and got[1] == 6


def _log_softmax(x):
  x = x.astype(np.float64)
  z = x - x.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("vocab", [5, 127, 128, 300, 1000])
def test_vocab_major_greedy_matches_numpy(vocab, jit):
  rng = np.random.RandomState(vocab)
  logits = rng.normal(scale=3.0, size=(vocab, 9)).astype(np.float32)  # [V, B]
  logits[:, 1] = np.round(logits[:, 1])  # ties: the first index wins
  logits[vocab - 1, 2] = 50.0  # the maximum in the last (partial) block
  logits[:, 3] = 7.0  # all tied: id 0
  keys = jax.random.split(jax.random.key(0), 9)
  select = jax.jit(select_tokens_vocab_major, static_argnums=2) if jit else select_tokens_vocab_major
  tokens, logprobs = select(jnp.asarray(logits), keys, SamplingParams(temperature=0.0))
  chex.assert_shape((tokens, logprobs), [(9,), (9,)])
  want = np.argmax(logits, axis=0)
  np.testing.assert_array_equal(np.asarray(tokens), want)
  np.testing.assert_allclose(np.asarray(logprobs), _log_softmax(logits.T)[np.arange(9), want], atol=1e-5)


@pytest.mark.parametrize("sampling", [SamplingParams(temperature=0.0), SamplingParams(temperature=0.7),
                                      SamplingParams(temperature=1.0, top_k=5, top_p=0.9)])
def test_vocab_major_draws_equal_select_tokens(sampling):
  logits = jnp.asarray(np.random.RandomState(1).normal(scale=2.0, size=(300, 6)), jnp.float32)
  keys = jax.random.split(jax.random.key(3), 6)
  want = select_tokens(logits.T, keys, sampling)
  got = jax.jit(select_tokens_vocab_major, static_argnums=2)(logits, keys, sampling)
  np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
  np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), atol=1e-6)


def test_vocab_major_nan_row_gives_a_valid_id():
  x = jnp.full((7, 2), jnp.nan).at[:, 1].set(jnp.arange(7.0))
  tokens, _ = select_tokens_vocab_major(x, jax.random.split(jax.random.key(0), 2), SamplingParams(temperature=0.0))
  assert 0 <= int(tokens[0]) < 7 and int(tokens[1]) == 6


@pytest.mark.parametrize("vocab", [8, 300])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_vocab_major_temperature_draws_follow_the_exact_distribution(vocab, temperature):
  """Inverse-CDF draws against the exact softmax: chi-square over the likely tokens, never a -inf token, log-probs
  of the scaled distribution; mass sits in the last, partial block of 300 = 2 x 128 + 44 too."""
  rng = np.random.RandomState(vocab)
  logits = rng.normal(scale=2.0, size=vocab).astype(np.float32)
  logits[-3:] += 4.0
  logits[1] = -np.inf
  draws = 20000
  keys = jax.random.split(jax.random.key(1), draws)
  select = jax.jit(select_tokens_vocab_major, static_argnums=2)
  batch = jnp.broadcast_to(jnp.asarray(logits)[:, None], (vocab, draws))
  tokens, logprobs = select(batch, keys, SamplingParams(temperature=temperature))
  tokens = np.asarray(tokens)
  z = logits.astype(np.float64) / temperature
  p = np.exp(z - z.max())
  p /= p.sum()
  counts = np.bincount(tokens, minlength=vocab).astype(np.float64)
  assert counts[1] == 0
  likely = p > 1e-3
  _, pvalue = scipy.stats.chisquare(counts[likely], p[likely] / p[likely].sum() * counts[likely].sum())
  assert pvalue > 1e-3, (counts[likely], p[likely] * draws)
  assert counts[~likely].sum() < 3 * draws * p[~likely].sum() + 10
  np.testing.assert_allclose(np.asarray(logprobs), np.log(p[tokens]), atol=1e-5)
  again, _ = select(batch, keys, SamplingParams(temperature=temperature))
  np.testing.assert_array_equal(np.asarray(again), tokens)  # same keys, same draws
