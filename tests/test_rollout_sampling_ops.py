"""The sampler's argmax against numpy (ties, infinities, NaN rows), with and without jit."""

import chex
import jax.numpy as jnp
import numpy as np

from prorl_jax.rollout.sampling import first_argmax


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
