"""Parallelism: the device mesh, sharding rules for params / optimizer state / batches / KV caches, multi-host
initialisation, and per-device memory estimates.

Public API:
  make_mesh(config.mesh, devices=None) -> Mesh with axes ("data", "fsdp", "tensor")
  param_shardings(model_config, params, mesh, mode="train"|"sample"), train_state_shardings(model_config, state,
      optimizer, mesh), rows_shardings(tree, mesh), kv_cache_shardings(model_config, rows, cache_len, mesh)
  constrain_activations(x), map_row_shards(fn, row_args, other_args)   (inside jit, under jax.set_mesh(mesh))
  maybe_initialize(config), process_rows(mesh, rows), data_shard(mesh, rows), global_batch(local, mesh)
  estimate_train(...), estimate_rollout(...), estimate_run(config, model_config, mesh)
"""

from prorl_jax.parallel.activations import constrain_activations, map_row_shards
from prorl_jax.parallel.distributed import (data_shard, global_batch, launch_environment, maybe_initialize,
                                            process_rows)
from prorl_jax.parallel.memory import (RolloutMemory, TrainMemory, estimate_rollout, estimate_run, estimate_train,
                                       param_bytes)
from prorl_jax.parallel.mesh import AXES, BATCH_AXES, axis_size, batch_axes, describe, make_mesh, mesh_shape
from prorl_jax.parallel.rules import (KV_CACHE_AXES, PARAM_AXES, SAMPLE_RULES, TRAIN_RULES, MissingRuleError,
                                      kv_cache_shardings, kv_cache_spec, named, opt_state_shardings, param_shardings,
                                      param_specs, replicated, rows_shardings, rows_spec, shard_bytes, spec_for,
                                      train_state_shardings)

__all__ = [
    "AXES", "BATCH_AXES", "KV_CACHE_AXES", "PARAM_AXES", "SAMPLE_RULES", "TRAIN_RULES", "MissingRuleError",
    "RolloutMemory", "TrainMemory", "axis_size", "batch_axes", "constrain_activations", "data_shard", "describe",
    "estimate_rollout", "estimate_run", "estimate_train", "global_batch", "kv_cache_shardings", "kv_cache_spec",
    "launch_environment", "make_mesh", "map_row_shards", "maybe_initialize", "mesh_shape", "named",
    "opt_state_shardings", "param_bytes", "param_shardings", "param_specs", "process_rows", "replicated",
    "rows_shardings", "rows_spec", "shard_bytes", "spec_for", "train_state_shardings",
]
