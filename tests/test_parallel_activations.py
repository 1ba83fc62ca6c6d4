"""Activation layout under a context mesh: the model's row constraints for FSDP (`models.constrain_activations` with
`parallel.TRAIN_LAYOUT`) and per-row-shard execution."""

import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from prorl_jax import algorithms, models, parallel


def _pin(v):
  return models.constrain_activations(parallel.TRAIN_LAYOUT, v)


def test_constrain_activations():
  mesh = parallel.make_mesh(dict(data=2, fsdp=2, tensor=2))
  x = jnp.ones((8, 4, 6))
  f = jax.jit(lambda v: _pin(v * 2))
  with jax.set_mesh(mesh):
    y = f(x)
  assert y.sharding.is_equivalent_to(NamedSharding(mesh, P(("data", "fsdp"))), 3)
  np.testing.assert_array_equal(jax.jit(lambda v: _pin(v * 2))(x), 2 * x)  # no mesh
  with jax.set_mesh(mesh):  # no layout: no hint
    free = jax.jit(lambda v: models.constrain_activations(models.NO_LAYOUT, v * 2)).lower(x).as_text()
  assert "sharding_constraint" not in free and "Sharding" not in free


def _dot_row_counts(compiled) -> set[int]:
  return {int(m.group(1)) for m in re.finditer(r"= f32\[(\d+),\d+\]\{1,0\} (?:dot|fusion)\(", compiled.as_text())}


def test_constraint_keeps_fsdp_activations_split_by_rows():
  """Weights split over fsdp along the hidden dim: without the constraint GSPMD splits the hidden dim of the
  activations and splits rows over "data" only (16 rows per device here); with it every device keeps 32 / 8 = 4 whole
  rows (ZeRO-3)."""
  mesh = parallel.make_mesh(dict(data=2, fsdp=4, tensor=1))
  x = jax.ShapeDtypeStruct((32, 64), jnp.float32, sharding=NamedSharding(mesh, P(("data", "fsdp"))))
  w = jax.ShapeDtypeStruct((64, 64), jnp.float32, sharding=NamedSharding(mesh, P("fsdp")))

  def mlp(x, w1, w2, constrain):
    c = _pin if constrain else (lambda v: v)
    h = c(jnp.tanh(c(x) @ w1))
    return jnp.sum(c(h @ w2) ** 2)

  with jax.set_mesh(mesh):
    free = jax.jit(jax.grad(lambda *a: mlp(*a, False), argnums=(1, 2))).lower(x, w, w).compile()
    pinned = jax.jit(jax.grad(lambda *a: mlp(*a, True), argnums=(1, 2))).lower(x, w, w).compile()
  assert 4 in _dot_row_counts(pinned) and 16 not in _dot_row_counts(pinned)
  assert 16 in _dot_row_counts(free)


def test_map_row_shards_runs_per_shard_and_matches_the_plain_call():
  mesh = parallel.make_mesh(dict(data=2, fsdp=2, tensor=2))
  rng = np.random.RandomState(0)
  hidden = jnp.asarray(rng.normal(size=(8, 5, 16)), jnp.float32)
  head = jnp.asarray(rng.normal(size=(16, 50)), jnp.float32)
  tokens = jnp.asarray(rng.randint(0, 50, size=(8, 5)))
  seen = []

  def fn(h, t, w):
    seen.append(h.shape)
    return algorithms.token_logprobs_from_hidden(h, w, t, 1.0, chunk_size=3, return_entropy=True)

  want = fn(hidden, tokens, head)
  f = jax.jit(lambda h, t, w: parallel.map_row_shards(fn, (h, t), (w,)))
  with jax.set_mesh(mesh):
    got = f(jax.device_put(hidden, NamedSharding(mesh, P(("data", "fsdp")))), tokens, head)
  assert seen[-1] == (2, 5, 16)  # 8 rows over data x fsdp = 4 shards
  assert got[0].sharding.is_equivalent_to(NamedSharding(mesh, P(("data", "fsdp"))), 2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)
  # Rows that do not split over the batch axes, and no mesh: a plain call.
  with jax.set_mesh(mesh):
    odd = jax.jit(lambda h, t, w: parallel.map_row_shards(fn, (h, t), (w,)))(hidden[:6], tokens[:6], head)
  assert seen[-1] == (6, 5, 16)
  np.testing.assert_allclose(odd[0], want[0][:6], rtol=1e-5, atol=1e-5)
  jax.jit(lambda h, t, w: parallel.map_row_shards(fn, (h, t), (w,)))(hidden, tokens, head)
  assert seen[-1] == (8, 5, 16)
