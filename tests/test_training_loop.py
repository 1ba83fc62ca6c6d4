"""The trainer end to end on the embedded default, shrunk: a few steps, resets, NaN skipping, resume after SIGKILL."""

import gzip
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from prorl_jax import algorithms
from prorl_jax.training import Trainer, train
from training_helpers import REPO, read_rows, small_config, without_timing


def test_few_steps_end_to_end(tmp_path):
  # One update per step (each its step's first, on the params that computed the old log-probs); a reset at step 2.
  config = small_config(**{"checkpoint.export_hf": True, "batch.mini_batch_prompts": 4,
                           "reference_reset.every_k_steps": 2})
  rows = train(config, tmp_path, show_progress=False, profile_steps=(1, 2))
  assert [r["step"] for r in rows] == [0, 1, 2, 3]
  assert "eval/score@1" in rows[0] and "eval/score@1" in rows[2] and "eval/score@1" in rows[3]
  assert rows[0]["eval/score@1"] >= rows[0]["eval/pass@1"] and "eval/solved@1" not in rows[0]
  for row in rows[1:]:
    for key in ("reward/mean", "kl", "entropy", "response_length/mean", "clip_frac", "dynamic_sampling/kept_frac",
                "ref_resets", "pass_rate", "grad_norm", "loss", "mismatch/abs_logp_diff_mean", "mismatch/kl_k3"):
      assert key in row and math.isfinite(row[key]), key
    assert 0 < row["dynamic_sampling/kept_frac"] <= 1
    # The rollout-vs-trainer mismatch is logged with the correction off; the Cov share is 0 for PPO-clip.
    assert "rollout_correction/mean" not in row and row["cov_frac"] == 0.0
  assert rows[1]["kl"] == 0.0  # the reference starts as a copy of the policy
  assert rows[2]["ref_resets"] == 1 and rows[1]["ref_resets"] == 0
  assert rows[2]["kl"] > 0.0  # the policy moved away from the reference in steps 1-2 ...
  assert rows[3]["kl"] == 0.0  # ... and right after the reset the reference equals it again
  for row in rows[1:]:  # on-policy updates: the importance ratio is exactly 1
    assert row["ppo_kl"] == 0.0 and row["clip_frac"] == 0.0 and row["pg_clipfrac_lower"] == 0.0
  for name in ("training_curves.png", "summary.txt", "config.json", "final_hf/config.json",
               "final_hf/model.safetensors", "final_hf/tokenizer.json"):
    assert (tmp_path / name).exists(), name
  assert list((tmp_path / "tensorboard").iterdir())
  assert (tmp_path / "checkpoints" / "3").is_dir()
  for phase in ("rollout", "reward", "logprob", "update", "step"):
    assert rows[1][f"time/{phase}_s"] > 0, phase
  # The profiled steps' trace carries the named phases.
  traces = list((tmp_path / "profile").rglob("*.trace.json.gz"))
  assert len(traces) == 1
  events = {e.get("name") for e in json.load(gzip.open(traces[0]))["traceEvents"]}
  assert {"rollout_and_reward", "logprob", "update"} <= events


def test_nonfinite_update_is_skipped_and_counted(tmp_path, monkeypatch):
  calls = {"n": 0}
  original = algorithms.compute_advantages

  def poisoned(*args, **kwargs):
    calls["n"] += 1
    adv = original(*args, **kwargs)
    return adv * np.nan if calls["n"] == 2 else adv

  monkeypatch.setattr(algorithms, "compute_advantages", poisoned)
  trainer = Trainer(small_config(**{"eval_every": 0, "eval.at_start": False}), tmp_path, show_progress=False)
  try:
    before = None
    trainer.train_step(1)
    before = jax.device_get(trainer.state.params)
    m2 = trainer.train_step(2)
    after = jax.device_get(trainer.state.params)
    m3 = trainer.train_step(3)
  finally:
    trainer.close()
  assert m2["updates/skipped_nonfinite"] == 2 and m2["nonfinite_skips"] == 2  # both mini-batches skipped
  jax.tree.map(np.testing.assert_array_equal, before, after)
  assert m3["updates/skipped_nonfinite"] == 0 and m3["nonfinite_skips"] == 2
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(trainer.state.params)))


def _config_file(tmp_path, **overrides) -> str:
  path = tmp_path / "config.py"
  path.write_text(textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {str(REPO / 'tests')!r})
      from training_helpers import small_config

      def get_config():
        return small_config(**{overrides!r})
      """))
  return str(path)


def _cli(config_path, workdir, *extra):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, "-m", "experiments.prorlv2", f"--config={config_path}",
                           f"--workdir={workdir}", *extra], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # the default suite kills and resumes in test_training_faults.py (SIGKILL, then SIGTERM)
def test_resume_after_sigkill_logs_the_same_metrics(tmp_path):
  config = _config_file(tmp_path, **{"total_steps": 5, "eval_every": 2, "checkpoint_every": 2})
  full = _cli(config, tmp_path / "full")
  interrupted = _cli(config, tmp_path / "killed")
  # Kill the second run with SIGKILL once it has logged step 3 (a checkpoint exists at step 2).
  deadline = time.time() + 600
  while time.time() < deadline:
    path = tmp_path / "killed" / "metrics.jsonl"
    if path.exists() and any('"step": 3' in line for line in path.read_text().splitlines()):
      break
    assert interrupted.poll() is None, interrupted.communicate()[1][-3000:]
    time.sleep(0.2)
  interrupted.send_signal(signal.SIGKILL)
  interrupted.wait()
  resumed = _cli(config, tmp_path / "killed")
  for proc in (full, resumed):
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
  a = [without_timing(r) for r in read_rows(tmp_path / "full")]
  b = [without_timing(r) for r in read_rows(tmp_path / "killed")]
  assert [r["step"] for r in b] == [0, 1, 2, 3, 4, 5]
  assert a == b


def test_invalid_config_value_names_the_field(tmp_path):
  proc = _cli(_config_file(tmp_path), tmp_path / "w", "--config.batch.mini_batch_prompts=3")
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 2
  assert "config.batch.mini_batch_prompts" in err and "Traceback" not in err
