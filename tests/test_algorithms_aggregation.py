"""`agg_loss` vs a numpy reference from the ALGORITHMS.md section 6 table; exact global normalisation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from prorl_jax import algorithms as A


def np_agg(values, mask, mode, tokens=None, seqs=None, scale=None, dp=1):
  v, m = np.asarray(values, np.float64), np.asarray(mask, np.float64)
  v = np.where(m > 0, v, 0.0)
  valid_seq = m.sum(1) > 0
  if mode == "token-mean":
    return (v * m).sum() / (m.sum() if tokens is None else tokens) * dp
  if mode == "token-sum":
    return (v * m).sum() * dp
  if mode == "seq-mean-token-mean":
    per_seq = [(v[b] * m[b]).sum() / (m[b].sum() + 1e-8) for b in range(len(v)) if valid_seq[b]]
  else:
    per_seq = [(v[b] * m[b]).sum() for b in range(len(v)) if valid_seq[b]]
  loss = sum(per_seq) / (valid_seq.sum() if seqs is None else seqs) * dp
  if mode == "seq-mean-token-sum-norm":
    loss /= v.shape[1] if scale is None else scale
  return loss


def _data(seed, b=8, t=12):
  rng = np.random.default_rng(seed)
  values = rng.normal(size=(b, t)).astype(np.float32)
  mask = (np.arange(t)[None] < rng.integers(1, t + 1, b)[:, None]).astype(np.float32)
  mask[2] = 0.0  # a fully masked sequence: excluded from the seq-* denominators
  values[mask == 0] = np.nan  # padding garbage must never leak
  return values, mask


class AggLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*A.AGG_MODES)
  def test_matches_numpy(self, mode):
    values, mask = _data(0)
    got = self.variant(lambda v, m: A.agg_loss(v, m, mode))(values, mask)
    chex.assert_shape(got, ())
    np.testing.assert_allclose(got, np_agg(values, mask, mode), rtol=1e-5, atol=1e-6)
    got = self.variant(lambda v, m: A.agg_loss(v, m, mode, global_num_tokens=123.0, global_num_seqs=17.0,
                                               loss_scale_factor=64.0, dp_size=4))(values, mask)
    np.testing.assert_allclose(got, np_agg(values, mask, mode, 123.0, 17.0, 64.0, 4), rtol=1e-5, atol=1e-6)

  @parameterized.parameters(*A.AGG_MODES)
  def test_micro_batches_sum_to_the_full_batch(self, mode):
    """Gradient accumulation: per-micro-batch losses with global counts add up to the whole-batch loss."""
    values, mask = _data(1, b=12)
    tokens, seqs = A.global_counts(mask)
    full = A.agg_loss(values, mask, mode)
    parts = [A.agg_loss(values[i:i + 4], mask[i:i + 4], mode, global_num_tokens=tokens, global_num_seqs=seqs)
             for i in range(0, 12, 4)]
    np.testing.assert_allclose(sum(parts), full, rtol=1e-5, atol=1e-6)
    grad_full = jax.grad(lambda v: A.agg_loss(v, mask, mode))(jnp.nan_to_num(values))
    grad_parts = jnp.concatenate([
        jax.grad(lambda v, i=i: A.agg_loss(v, mask[i:i + 4], mode, global_num_tokens=tokens,
                                           global_num_seqs=seqs))(jnp.nan_to_num(values[i:i + 4]))
        for i in range(0, 12, 4)])
    np.testing.assert_allclose(grad_parts, grad_full, rtol=1e-5, atol=1e-7)

  @parameterized.parameters(*A.AGG_MODES)
  def test_data_parallel_shards_psum_to_the_full_batch(self, mode):
    """shard_map over 8 devices: psum of per-shard losses (global counts psum-ed too) = the unsharded loss."""
    values, mask = _data(2, b=16)
    values = np.nan_to_num(values)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))

    def shard_loss(v, m):
      tokens, seqs = jax.lax.psum(A.global_counts(m), "data")
      return jax.lax.psum(A.agg_loss(v, m, mode, global_num_tokens=tokens, global_num_seqs=seqs), "data")

    fn = jax.jit(jax.shard_map(shard_loss, mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P()))
    sharding = NamedSharding(mesh, P("data"))
    got = fn(jax.device_put(values, sharding), jax.device_put(mask, sharding))
    np.testing.assert_allclose(got, np_agg(values, mask, mode), rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_masked_reductions_match_numpy(self):
    values, mask = _data(5)
    v, m = np.where(mask > 0, values, 0.0).astype(np.float64), mask.astype(np.float64)
    n = m.sum()
    mean = (v * m).sum() / (n + 1e-8)
    var = ((v - mean) ** 2 * m).sum() / (n + 1e-8)
    np.testing.assert_allclose(self.variant(A.masked_sum)(values, mask), (v * m).sum(), rtol=1e-5)
    np.testing.assert_allclose(self.variant(A.masked_mean)(values, mask), mean, rtol=1e-5)
    np.testing.assert_allclose(self.variant(lambda a, b: A.masked_mean(a, b, axis=-1))(values, mask),
                               (v * m).sum(1) / (m.sum(1) + 1e-8), rtol=1e-5)
    np.testing.assert_allclose(self.variant(A.masked_var)(values, mask), var * n / (n - 1), rtol=1e-5)
    np.testing.assert_allclose(self.variant(lambda a, b: A.masked_var(a, b, unbiased=False))(values, mask), var,
                               rtol=1e-5)
    white = self.variant(A.masked_whiten)(values, mask)
    np.testing.assert_allclose(np.asarray(white)[mask > 0], ((v - mean) / np.sqrt(var * n / (n - 1) + 1e-8))[m > 0],
                               rtol=1e-5, atol=1e-6)
    one = np.zeros_like(mask)
    one[0, 0] = 1.0
    self.assertEqual(float(A.masked_var(values, one)), 0.0)  # verl raises for N = 1; finite here

  def test_empty_batch_is_zero_not_nan(self):
    values, mask = _data(3)
    for mode in A.AGG_MODES:
      self.assertEqual(float(A.agg_loss(values, np.zeros_like(mask), mode)), 0.0)

  def test_bad_inputs(self):
    values, mask = _data(4)
    with self.assertRaisesRegex(ValueError, "agg_mode"):
      A.agg_loss(values, mask, "mean")
    with self.assertRaisesRegex(ValueError, "mask"):
      A.agg_loss(values, mask[:, :-1], "token-mean")
