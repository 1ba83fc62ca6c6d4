"""A train state checkpointed on one mesh restores, value for value, onto another mesh shape."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from prorl_jax import models, parallel
from prorl_jax.training import checkpointing
from prorl_jax.training import state as state_lib


def test_checkpoint_restores_across_mesh_shapes(tmp_path):
  config = models.Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
  optimizer = state_lib.make_optimizer(ml_collections.ConfigDict(dict(
      lr=1e-3, warmup_steps=3, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0)))
  params = models.init_params(config, jax.random.key(3))
  state = state_lib.create_train_state(params, optimizer, seed=7)
  # Non-trivial optimizer moments, so a restore that dropped or permuted them would show.
  noisy = jax.tree.map(lambda x: x + 0.01 * jax.random.normal(jax.random.key(1), x.shape, x.dtype), params)
  state = state.replace(step=state.step + 5, opt_state=optimizer.update(noisy, state.opt_state, params)[1])
  host = jax.device_get(state)

  save_mesh = parallel.make_mesh(dict(data=1, fsdp=4, tensor=2))
  saved = jax.device_put(state, parallel.train_state_shardings(config, state, optimizer, save_mesh))
  ckpt = checkpointing.Checkpointer(tmp_path / "ckpt", async_save=False)
  ckpt.save(5, saved, {"note": "fsdp4_tensor2"})
  ckpt.wait()

  abstract = jax.eval_shape(lambda: state)
  for sizes in (dict(data=2, fsdp=1, tensor=4), dict(data=8, fsdp=1, tensor=1), dict(data=1, fsdp=2, tensor=1)):
    devices = jax.devices()[:2] if sizes == dict(data=1, fsdp=2, tensor=1) else None
    mesh = parallel.make_mesh(sizes, devices=devices)
    shardings = parallel.train_state_shardings(config, abstract, optimizer, mesh)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    restored, host_state = ckpt.restore(5, target)
    assert host_state == {"note": "fsdp4_tensor2"}
    jax.tree.map(lambda r, s: np.testing.assert_equal(r.sharding.is_equivalent_to(s, r.ndim), True), restored,
                 shardings)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), host)
    emb = restored.params["embed_tokens"]["embedding"]  # [V, H] -> (tensor, fsdp)
    assert emb.addressable_shards[0].data.shape == (96 // sizes["tensor"], 32 // sizes["fsdp"])
  ckpt.close()
