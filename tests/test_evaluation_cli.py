"""experiments.evaluate on the embedded default's checkpoint: deterministic numbers, Orbax and HF checkpoints,
the pass@k plot with two curves."""

import json
import os
import subprocess
import sys

import jax
import optax
import pytest

from prorl_jax import models
from prorl_jax.training.evaluate import run_evaluation
from prorl_jax.training.checkpointing import Checkpointer
from prorl_jax.training.state import create_train_state
from training_helpers import REPO, small_config


def _config():
  c = small_config()
  c.eval.num_samples = 4
  c.data.validation = "embedded:tiny?size=16"
  return c


# Slow suite (40 s): the default suite evaluates Orbax run checkpoints end to end in test_study_cli (the smoke
# study) and checks the sampler's determinism in test_rollout_sampler.
@pytest.mark.slow
def test_same_numbers_twice_and_orbax_equals_hf(tmp_path):
  config = _config()
  # An Orbax checkpoint of a train state whose params are the HF checkpoint's.
  _, params = models.load_hf(config.model.path)
  state = create_train_state(params, optax.adamw(1e-3), seed=0)
  ckpt = Checkpointer(tmp_path / "run" / "checkpoints")
  ckpt.save(7, state, {"note": "test"})
  ckpt.close()
  first = run_evaluation(config, [("hf", config.model.path), ("orbax", str(tmp_path / "run"))], tmp_path / "a")
  second = run_evaluation(config, [("hf", config.model.path)], tmp_path / "b")
  assert first["summary"]["hf"] == second["summary"]["hf"]
  assert first["summary"]["orbax"] == first["summary"]["hf"]
  assert set(first["summary"]["hf"]) == {"tiny/logic", "tiny/math", "all"}
  all_ = first["summary"]["hf"]["all"]
  assert all_["num_problems"] == 16 and all_["num_samples"] == 4
  assert 0.0 <= all_["pass@1"] <= all_["pass@4"] <= 1.0 and all_["pass@1"] <= all_["score@1"]
  assert os.path.getsize(tmp_path / "a" / "pass_at_k.png") > 10_000
  # Resuming a finished evaluation samples nothing new and gives the same summary.
  again = run_evaluation(config, [("hf", config.model.path)], tmp_path / "b")
  assert again["summary"] == second["summary"]


def test_cli_writes_summary_and_plot(tmp_path):
  cfg_file = tmp_path / "config.py"
  cfg_file.write_text(f"import sys\nsys.path.insert(0, {str(REPO / 'tests')!r})\n"
                      "from test_evaluation_cli import _config\n\ndef get_config():\n  return _config()\n")
  env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'tests'}", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--config={cfg_file}",
                         f"--checkpoint={_config().model.path}", f"--baseline={_config().model.path}",
                         f"--workdir={tmp_path / 'out'}", "--limit=4"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "out" / "summary.json").read_text())
  assert set(summary["summary"]) == {"baseline", "checkpoint"}
  assert (tmp_path / "out" / "pass_at_k.png").exists()
  assert "score@1" in proc.stdout and "pass@1" in proc.stdout
