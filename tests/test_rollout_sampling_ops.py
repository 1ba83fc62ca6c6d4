"""The sampler's reductions against numpy: first_argmax (ties, NaN rows) and token_logprobs, with and without jit."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prorl_jax.rollout.sampling import first_argmax, token_logprobs


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


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_token_logprobs_matches_numpy_log_softmax(scale):
  rng = np.random.RandomState(1)
  x = (rng.normal(size=(16, 1000)) * scale).astype(np.float32)
  tokens = rng.randint(0, 1000, size=16).astype(np.int32)
  shifted = x.astype(np.float64) - x.max(-1, keepdims=True)
  expected = (shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)))[np.arange(16), tokens]
  for fn in (token_logprobs, jax.jit(token_logprobs)):
    np.testing.assert_allclose(np.asarray(fn(jnp.asarray(x), jnp.asarray(tokens))), expected, rtol=1e-5, atol=1e-5)
