"""The trainer on 8 simulated devices (fsdp=4, tensor=2) gives the single-device run's numbers.

Slow suite: the default suite checks the parts on that mesh (test_parallel_train_step: the update;
test_parallel_sampler and test_rollout_batching: sampling) and the whole loop over two processes
(test_parallel_distributed)."""

import numpy as np
import pytest

from prorl_jax.training import train
from training_helpers import small_config


@pytest.mark.slow
def test_fsdp4_tensor2_matches_one_device(tmp_path):
  overrides = {"total_steps": 2, "eval_every": 0, "eval.at_start": False, "data.validation": ""}
  one = train(small_config(**overrides), tmp_path / "one", show_progress=False)
  sharded = train(small_config(**overrides, **{"mesh.devices": 0, "mesh.fsdp": 4, "mesh.tensor": 2}),
                  tmp_path / "eight", show_progress=False)
  # Step 1 samples from identical params with per-row PRNG keys: the same rollouts, rewards and filtering.
  for key in ("reward/mean", "response_length/mean", "dynamic_sampling/kept_frac"):
    assert one[1][key] == sharded[1][key], key
  for key in ("loss", "pg_loss", "kl_loss", "grad_norm", "entropy"):
    np.testing.assert_allclose(sharded[1][key], one[1][key], rtol=1e-4, atol=1e-6, err_msg=key)
  np.testing.assert_allclose(sharded[2]["kl"], one[2]["kl"], rtol=1e-3, atol=1e-6)
  assert (tmp_path / "eight" / "memory_estimate.json").exists()
