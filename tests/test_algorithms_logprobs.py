"""Chunked token log-probs / entropy vs full-logits numpy (values and analytic gradients) and a memory bound."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from prorl_jax import algorithms as A


def np_logp_entropy(logits, tokens, temperature):
  z = np.asarray(logits, np.float64) / temperature
  z = z - z.max(-1, keepdims=True)
  logsm = z - np.log(np.exp(z).sum(-1, keepdims=True))
  p = np.exp(logsm)
  logp = np.take_along_axis(logsm, np.asarray(tokens)[..., None], -1)[..., 0]
  return logp, -(p * logsm).sum(-1), p


def np_grad_logits(logits, tokens, temperature, w_logp, w_ent):
  """Analytic d/d logits of sum(w_logp * logp + w_ent * entropy) with s = logits / T, p = softmax(s):
  d logp_y / ds = onehot(y) - p;  dH/ds_j = -p_j (s_j - sum_k p_k s_k)."""
  s = np.asarray(logits, np.float64) / temperature
  _, _, p = np_logp_entropy(logits, tokens, temperature)
  onehot = np.eye(s.shape[-1])[np.asarray(tokens)]
  d_logp = onehot - p
  d_ent = -p * (s - (p * s).sum(-1, keepdims=True))
  return (w_logp[..., None] * d_logp + w_ent[..., None] * d_ent) / temperature


def _data(seed=0, b=3, t=7, v=50, h=12):
  rng = np.random.default_rng(seed)
  return (rng.normal(0, 2, (b, t, v)).astype(np.float32), rng.integers(0, v, (b, t)),
          rng.normal(0, 1, (b, t, h)).astype(np.float32), rng.normal(0, 0.4, (h, v)).astype(np.float32),
          rng.normal(0, 1, (b, t)).astype(np.float32), rng.normal(0, 1, (b, t)).astype(np.float32))


class LogprobsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((4, 1.0), (5, 1.2), (21, 0.7), (64, 1.2), (1, 1.0))  # remainder, exact, > N, 1
  def test_from_logits_matches_numpy(self, chunk, temperature):
    logits, tokens, *_ = _data()
    fn = self.variant(lambda l, y: A.token_logprobs_from_logits(l, y, temperature, chunk_size=chunk,
                                                                return_entropy=True))
    logp, ent = fn(logits, tokens)
    chex.assert_shape((logp, ent), tokens.shape)
    ref_logp, ref_ent, _ = np_logp_entropy(logits, tokens, temperature)
    np.testing.assert_allclose(logp, ref_logp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent, ref_ent, rtol=1e-5, atol=1e-5)
    only = self.variant(lambda l, y: A.token_logprobs_from_logits(l, y, temperature, chunk_size=chunk))(
        logits, tokens)
    np.testing.assert_allclose(only, ref_logp, rtol=1e-5, atol=1e-5)

  def test_bf16_logits_are_computed_in_fp32(self):
    logits, tokens, *_ = _data(1)
    bf = jnp.asarray(logits, jnp.bfloat16)
    logp = A.token_logprobs_from_logits(bf, tokens, 1.2, chunk_size=8)
    self.assertEqual(logp.dtype, jnp.float32)
    ref, _, _ = np_logp_entropy(np.asarray(bf.astype(jnp.float32)), tokens, 1.2)
    np.testing.assert_allclose(logp, ref, rtol=1e-5, atol=1e-5)

  @parameterized.parameters((4, 1.2), (64, 1.0))
  def test_from_logits_gradient(self, chunk, temperature):
    logits, tokens, _, _, w1, w2 = _data(2)

    def objective(l):
      logp, ent = A.token_logprobs_from_logits(l, tokens, temperature, chunk_size=chunk, return_entropy=True)
      return jnp.sum(w1 * logp + w2 * ent)

    grad = jax.jit(jax.grad(objective))(logits)
    np.testing.assert_allclose(grad, np_grad_logits(logits, tokens, temperature, w1, w2), rtol=1e-4, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_from_hidden_values(self):
    _, tokens, hidden, w, _, _ = _data(3)
    fn = self.variant(lambda hd, wt, y: A.token_logprobs_from_hidden(hd, wt, y, 1.2, chunk_size=5,
                                                                     return_entropy=True,
                                                                     precision=jax.lax.Precision.HIGHEST))
    logp, ent = fn(hidden, w, tokens)
    ref_logp, ref_ent, _ = np_logp_entropy(hidden.astype(np.float64) @ w, tokens, 1.2)
    np.testing.assert_allclose(logp, ref_logp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent, ref_ent, rtol=1e-5, atol=1e-5)

  @parameterized.parameters((4, 1.2), (16, 1.0))
  def test_from_hidden_gradients(self, chunk, temperature):
    _, tokens, hidden, w, w1, w2 = _data(3)
    bias = np.random.default_rng(0).normal(0, 0.1, w.shape[1]).astype(np.float32)

    def objective(hd, wt, bs):
      logp, ent = A.token_logprobs_from_hidden(hd, wt, tokens, temperature, chunk_size=chunk, return_entropy=True,
                                               bias=bs, precision=jax.lax.Precision.HIGHEST)
      return jnp.sum(w1 * logp + w2 * ent)

    grads = jax.jit(jax.grad(objective, argnums=(0, 1, 2)))(hidden, w, bias)
    full_logits = hidden.astype(np.float64) @ w + bias
    g_logits = np_grad_logits(full_logits, tokens, temperature, w1, w2)  # chain rule through z = h W + b
    np.testing.assert_allclose(grads[0], g_logits @ w.T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads[1], np.einsum("bth,btv->hv", hidden, g_logits), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads[2], g_logits.sum((0, 1)), rtol=1e-4, atol=1e-5)

  def test_memory_is_bounded_by_the_chunk(self):
    """Compiled temp memory of value+grad (hidden variant) and of the logits variant does not grow with tokens."""
    h, v, chunk = 32, 4096, 128
    block = chunk * v * 4

    def temp_bytes(n_tokens, variant):
      hidden = jax.ShapeDtypeStruct((1, n_tokens, h), jnp.float32)
      tokens = jax.ShapeDtypeStruct((1, n_tokens), jnp.int32)
      if variant == "hidden":
        w = jax.ShapeDtypeStruct((h, v), jnp.float32)
        fn = jax.grad(lambda hd, wt, y: jnp.sum(jnp.stack(A.token_logprobs_from_hidden(
            hd, wt, y, 1.2, chunk_size=chunk, return_entropy=True))), argnums=(0, 1))
        compiled = jax.jit(fn).lower(hidden, w, tokens).compile()
      else:
        logits = jax.ShapeDtypeStruct((1, n_tokens, v), jnp.float32)
        fn = lambda lg, y: A.token_logprobs_from_logits(lg, y, 1.2, chunk_size=chunk, return_entropy=True)
        compiled = jax.jit(fn).lower(logits, tokens).compile()
      return compiled.memory_analysis().temp_size_in_bytes

    for variant in ("hidden", "logits"):
      small, large = temp_bytes(1024, variant), temp_bytes(4096, variant)
      full_logits = 4096 * v * 4
      self.assertLess(large, 6 * block, variant)  # a few [chunk, V] blocks ...
      self.assertLess(large, full_logits / 4, variant)  # ... far below the full [tokens, V] logits
      self.assertLess(large - small, block, variant)  # and independent of the number of tokens

  def test_bad_inputs(self):
    logits, tokens, hidden, w, *_ = _data()
    with self.assertRaisesRegex(ValueError, "temperature"):
      A.token_logprobs_from_logits(logits, tokens, 0.0)
    with self.assertRaisesRegex(ValueError, "tokens"):
      A.token_logprobs_from_logits(logits, tokens[:, :-1])
    with self.assertRaisesRegex(ValueError, "chunk_size"):
      A.token_logprobs_from_logits(logits, tokens, chunk_size=0)
    with self.assertRaisesRegex(ValueError, "lm_head"):
      A.token_logprobs_from_hidden(hidden, w.T, tokens)
    with self.assertRaisesRegex(ValueError, "logits"):
      A.token_logprobs_from_logits(logits[0], tokens)
