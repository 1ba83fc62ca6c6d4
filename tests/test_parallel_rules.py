"""Mesh construction and the sharding rules: every Qwen2 param has a rule, uneven dims fall back, errors are clear."""

import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from prorl_jax import models, parallel
from prorl_jax.errors import ConfigError
from prorl_jax.parallel import rules
from prorl_jax.training import config as config_lib
from prorl_jax.training import state as state_lib

CONFIGS = {
    "tiny_untied": models.Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2),
    "tiny_tied_mha": models.Qwen2Config(vocab_size=96, hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=6, num_key_value_heads=6, tie_word_embeddings=True),
    "qwen2_1.5b": models.Qwen2Config(),  # the real dims, abstract shapes only
}


def _abstract_params(config):
  return jax.eval_shape(lambda: models.init_params(config, jax.random.key(0)))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_param_has_a_rule(name):
  config = CONFIGS[name]
  params = _abstract_params(config)
  mesh = parallel.make_mesh(dict(data=1, fsdp=4, tensor=2))
  specs = parallel.param_specs(config, params, mesh)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  assert len(jax.tree.leaves(specs, is_leaf=lambda s: isinstance(s, P))) == len(flat)
  for path, leaf in flat:
    key = rules._canonical(path)
    assert key in models.PARAM_AXES, key
    assert len(models.PARAM_AXES[key]) == leaf.ndim, key


def test_rule_table_has_no_stale_entries():
  used = set()
  for config in CONFIGS.values():
    for path, _ in jax.tree_util.tree_flatten_with_path(_abstract_params(config))[0]:
      used.add(rules._canonical(path))
  assert used == set(models.PARAM_AXES)


def test_param_without_rule_fails_naming_it():
  config = CONFIGS["tiny_untied"]
  params = dict(_abstract_params(config))
  params["layers_0"] = dict(params["layers_0"], adapter={"kernel": jax.ShapeDtypeStruct((64, 8), jnp.float32)})
  mesh = parallel.make_mesh(dict(data=1, fsdp=4, tensor=2))
  with pytest.raises(parallel.MissingRuleError, match=r"'layers/adapter/kernel'.*PARAM_AXES"):
    parallel.param_specs(config, params, mesh)


def test_qwen2_1p5b_layout():
  config = CONFIGS["qwen2_1.5b"]  # H 1536, Hq 12, Hkv 2, D 128, I 8960, V 151936
  params = _abstract_params(config)
  mesh = parallel.make_mesh(dict(data=1, fsdp=2, tensor=4))
  specs = parallel.param_specs(config, params, mesh)
  attn, mlp = specs["layers_3"]["self_attn"], specs["layers_3"]["mlp"]
  assert attn["q_proj"]["kernel"] == P("fsdp", "tensor")  # 12 heads over 4
  assert attn["q_proj"]["bias"] == P("tensor")
  assert attn["k_proj"]["kernel"] == P("fsdp")  # 2 kv heads do not split over 4: replicated over tensor
  assert attn["o_proj"]["kernel"] == P("tensor", "fsdp")
  assert mlp["down_proj"]["kernel"] == P("tensor", "fsdp") and mlp["up_proj"]["kernel"] == P("fsdp", "tensor")
  assert specs["embed_tokens"]["embedding"] == P("tensor", "fsdp") and specs["lm_head"]["kernel"] == P("fsdp", "tensor")
  assert specs["norm"]["weight"] == P() and specs["layers_0"]["input_layernorm"]["weight"] == P()
  sample = parallel.param_specs(config, params, mesh, mode="sample")
  assert sample["layers_3"]["mlp"]["up_proj"]["kernel"] == P(None, "tensor")


def test_uneven_dims_fall_back_with_a_debug_log(caplog):
  mesh = parallel.make_mesh(dict(data=2, fsdp=4, tensor=1))
  with caplog.at_level(logging.DEBUG, logger="prorl_jax.parallel.rules"):
    assert parallel.rows_spec((6, 10), mesh) == P("data")  # 6 rows: not over 8, but over data=2
    assert parallel.rows_spec((3, 10), mesh) == P()
  assert "does not split" in caplog.text
  # Heads split whole: 6 heads of 16 (96 columns) over tensor=4 divide as columns but not as heads.
  mesh_t = parallel.make_mesh(dict(data=1, fsdp=2, tensor=4))
  spec = parallel.spec_for((48, 96), ("embed", "heads"), mesh_t, parallel.TRAIN_RULES, units={"heads": 16})
  assert spec == P("fsdp")


def test_opt_state_follows_params_and_scalars_are_replicated():
  config = CONFIGS["tiny_untied"]
  optimizer = state_lib.make_optimizer(config_lib.default_config().optimizer)
  mesh = parallel.make_mesh(dict(data=2, fsdp=2, tensor=2))
  state = jax.eval_shape(lambda: state_lib.create_train_state(models.init_params(config, jax.random.key(0)),
                                                              optimizer, seed=0))
  sh = parallel.train_state_shardings(config, state, optimizer, mesh)
  adam = sh.opt_state[1][0]  # chain(clip_by_global_norm, adamw): adamw's ScaleByAdamState
  assert adam.count.spec == P() and sh.step.spec == P() and sh.rng.spec == P()
  jax.tree.map(lambda m, p: np.testing.assert_equal(m.spec, p.spec), adam.mu, sh.params)
  jax.tree.map(lambda m, p: np.testing.assert_equal(m.spec, p.spec), adam.nu, sh.ref_params)


def test_shard_bytes():
  mesh = parallel.make_mesh(dict(data=2, fsdp=2, tensor=2))
  assert parallel.shard_bytes((8, 6), 4, P(("data", "fsdp"), "tensor"), mesh) == 2 * 3 * 4
  assert parallel.shard_bytes((8, 6), 2, P(), mesh) == 96
  assert parallel.shard_bytes((7,), 4, P("data"), mesh) == 16  # ceil(7 / 2) elements


def test_mesh_shape_resolution_and_errors():
  assert parallel.mesh_shape(dict(data=2, fsdp=-1, tensor=2), 8) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert parallel.mesh_shape(config_lib.default_config().mesh, 8) == {"data": 1, "fsdp": 8, "tensor": 1}
  assert parallel.mesh_shape(config_lib.default_config(), 4)["fsdp"] == 4  # a whole run config
  assert parallel.mesh_shape(None, 8) == {"data": 1, "fsdp": 8, "tensor": 1}
  with pytest.raises(ConfigError, match=r"config.mesh \(data=2 x fsdp=2 x tensor=1\) covers 4 devices but 8"):
    parallel.mesh_shape(dict(data=2, fsdp=2, tensor=1), 8)
  with pytest.raises(ConfigError, match="only one axis may be -1"):
    parallel.mesh_shape(dict(data=-1, fsdp=-1, tensor=1), 8)
  with pytest.raises(ConfigError, match=r"config.mesh.fsdp = -1 cannot be resolved.*divide the 8 devices"):
    parallel.mesh_shape(dict(data=3, fsdp=-1, tensor=1), 8)
  with pytest.raises(ConfigError, match=r"config.mesh.tensor must be a positive integer or -1 .*got 0"):
    parallel.mesh_shape(dict(data=1, fsdp=-1, tensor=0), 8)
  with pytest.raises(ConfigError, match=r"unknown axes \['model'\]"):
    parallel.mesh_shape(ml_collections.ConfigDict(dict(data=1, model=8)), 8)


def test_make_mesh():
  mesh = parallel.make_mesh(dict(data=2, fsdp=-1, tensor=2))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  sub = parallel.make_mesh(dict(data=1, fsdp=2, tensor=1), devices=jax.devices()[2:4])
  assert list(sub.devices.flat) == jax.devices()[2:4]
  assert "fsdp=2" in parallel.describe(sub) and "1 process" in parallel.describe(sub)
