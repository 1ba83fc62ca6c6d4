"""Per-row-shard computation inside jitted steps under a context mesh (`with jax.set_mesh(mesh):` around the call).

GSPMD propagates shardings from the arguments; the model pins its own activations through the layout it is given
(`models.axes.constrain_activations` with `rules.TRAIN_LAYOUT`). `map_row_shards` runs a function per row shard
(`shard_map`), for code that GSPMD cannot split by rows, e.g. the LM-head loop of
`algorithms.token_logprobs_from_hidden`, whose chunks slice the flattened tokens. It is a plain call without a
multi-device context mesh.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
from jax.sharding import PartitionSpec as P

from prorl_jax.parallel.mesh import BATCH_AXES


def _context_mesh():
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty or mesh.size == 1 else mesh


def map_row_shards(fn: Callable[..., Any], row_args: Sequence[jax.Array], other_args: Sequence[Any] = ()) -> Any:
  """`fn(*row_args, *other_args)` computed per row shard of the context mesh.

  Args:
    fn: a function of arrays whose outputs are all per row (`[B, ...]`) and whose rows are independent.
    row_args: arrays `[B, ...]`, split over the batch axes ("data", "fsdp") along dim 0.
    other_args: arrays every shard needs whole (gathered once, e.g. the LM-head weight).

  Falls back to a plain call without a multi-device context mesh, or when B does not split over all the batch
  axes. Inside, `fn` sees `B / shards` rows, so a chunk size it takes counts tokens per device.
  """
  mesh = _context_mesh()
  if mesh is None:
    return fn(*row_args, *other_args)
  axes = tuple(a for a in BATCH_AXES if mesh.shape.get(a, 1) > 1)
  shards = math.prod(mesh.shape[a] for a in axes)
  if not axes or any(x.shape[0] % shards for x in row_args):
    return fn(*row_args, *other_args)
  rows = P(axes)
  out_shape = jax.eval_shape(fn, *row_args, *other_args)
  return jax.shard_map(fn, mesh=mesh, in_specs=(rows,) * len(row_args) + (P(),) * len(other_args),
                       out_specs=jax.tree.map(lambda _: rows, out_shape), check_vma=False)(*row_args, *other_args)
