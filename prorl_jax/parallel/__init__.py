"""Parallelism: the device mesh, the rules that map logical axes to mesh axes, multi-host initialisation.

The model declares the logical axes of its arrays (`prorl_jax.models.axes`); this package maps them to the
("data", "fsdp", "tensor") mesh and imports nothing else of the model.

Public API:
  make_mesh(config.mesh, devices=None) -> Mesh with axes ("data", "fsdp", "tensor")
  param_shardings(model_config, params, mesh, mode="train"|"sample"), train_state_shardings(model_config, state,
      optimizer, mesh), rows_shardings(tree, mesh), kv_cache_spec(model_config, rows, cache_len, mesh)
  TRAIN_LAYOUT: the layout the model is given inside jitted steps (`models.forward(..., layout=TRAIN_LAYOUT)`)
  map_row_shards(fn, row_args, other_args)   (inside jit, under jax.set_mesh(mesh))
  maybe_initialize(config), process_rows(mesh, rows), data_shard(mesh, rows), global_batch(local, mesh)
"""

from prorl_jax.parallel.activations import map_row_shards
from prorl_jax.parallel.distributed import (data_shard, global_batch, launch_environment, maybe_initialize,
                                            process_rows)
from prorl_jax.parallel.mesh import (AXES, BATCH_AXES, axis_size, batch_axes, describe, make_mesh, mesh_or_one_device,
                                     mesh_shape)
from prorl_jax.parallel.rules import (ROWS_AXES, SAMPLE_RULES, TRAIN_LAYOUT, TRAIN_RULES, LogicalLayout,
                                      MissingRuleError, kv_cache_spec, named, opt_state_shardings, param_shardings,
                                      param_specs, replicated, rows_shardings, rows_spec, shard_bytes, spec_for,
                                      train_state_shardings)

__all__ = [
    "AXES", "BATCH_AXES", "ROWS_AXES", "SAMPLE_RULES", "TRAIN_LAYOUT", "TRAIN_RULES", "LogicalLayout",
    "MissingRuleError", "axis_size", "batch_axes", "data_shard", "describe", "global_batch", "kv_cache_spec",
    "launch_environment", "make_mesh", "map_row_shards", "maybe_initialize", "mesh_or_one_device", "mesh_shape", "named",
    "opt_state_shardings", "param_shardings", "param_specs", "process_rows", "replicated", "rows_shardings",
    "rows_spec", "shard_bytes", "spec_for", "train_state_shardings",
]
