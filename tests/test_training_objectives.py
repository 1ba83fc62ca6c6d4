"""The 2026 objectives and rollout correction wired into the trainer: selectable from the config, in the metrics."""

import math

import pytest

from prorl_jax.errors import ConfigError
from prorl_jax.training import train
from prorl_jax.training import config as config_lib
from training_helpers import small_config

MISMATCH = ("mismatch/abs_logp_diff_mean", "mismatch/abs_logp_diff_max", "mismatch/kl_k1", "mismatch/kl_k3")


def _steps(rows):
  return [r for r in rows if r["step"] > 0]


@pytest.mark.parametrize("overrides", [
    {"algorithm.policy_loss": "clip_cov", "algorithm.clip_cov_ratio": 0.05, "algorithm.clip_cov_lb": -1e9,
     "algorithm.clip_cov_ub": 1e9, "algorithm.rollout_correction.level": "token"},
    pytest.param({"algorithm.policy_loss": "gspo", "algorithm.clip_low": 3e-4, "algorithm.clip_high": 4e-4,
                  "algorithm.advantage": "pass_at_k", "algorithm.rollout_correction.level": "sequence",
                  "algorithm.rollout_correction.threshold": (2.0,)}, marks=pytest.mark.slow),
])
def test_objective_and_rollout_correction_run_and_report(tmp_path, overrides):
  rows = _steps(train(small_config(**dict(overrides, total_steps=2)), tmp_path, show_progress=False))
  assert len(rows) == 2
  for row in rows:
    for key in MISMATCH + ("rollout_correction/mean", "rollout_correction/eff_sample_size", "cov_frac", "loss"):
      assert key in row and math.isfinite(row[key]), key
    assert row["mismatch/abs_logp_diff_max"] >= row["mismatch/abs_logp_diff_mean"] >= 0
  if overrides["algorithm.policy_loss"] == "clip_cov":
    assert all(r["cov_frac"] > 0 for r in rows)  # the Cov method touched tokens
    assert "rollout_correction/oob_ratio" in rows[0]


@pytest.mark.parametrize("field,value,match", [
    ("algorithm.policy_loss", "ppo2", "algorithm.policy_loss"),
    ("algorithm.rollout_correction.level", "row", "rollout_correction.level"),
    ("algorithm.rollout_correction.threshold", (5.0, 0.5), "rollout_correction.threshold"),
    ("algorithm.tau_neg", 0.0, "algorithm.tau_neg"),
    ("algorithm.clip_cov_lb", 9.0, "clip_cov_lb"),
    ("batch.logprob_micro_batch_size", 3, "must divide the step's 4 prompts x 4 samples"),  # not after a rollout
])
def test_bad_objective_settings_name_the_field(field, value, match):
  with pytest.raises(ConfigError, match=match):
    config_lib.validate(small_config(**{field: value}))
