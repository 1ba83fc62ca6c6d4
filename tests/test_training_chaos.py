"""The chaos test of issue 20: the embedded default killed with SIGKILL ten times (seeded moments: during start-up
and restore, at random points of steps, inside a checkpoint save, right after a reference reset) ends with the
same metrics and the same final params as the uninterrupted run. About 20 minutes on 2 cores: slow suite.

  .venv/bin/python -m pytest -q -m slow tests/test_training_chaos.py
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from prorl_jax import models
from prorl_jax.training import checkpointing
from training_helpers import REPO, read_rows, tiny_config, without_timing

CONFIG = str(REPO / "experiments" / "configs" / "tiny.py")
TOTAL = tiny_config().total_steps


def _start(workdir, env=None, child=False):
  script = [str(REPO / "tests" / "chaos_child.py")] if child else ["-m", "experiments.prorlv2"]
  return subprocess.Popen([sys.executable, *script, f"--config={CONFIG}", f"--workdir={workdir}"], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", **(env or {})),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _logged_steps(workdir):
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return set()
  steps = set()
  for line in path.read_text().splitlines():
    try:
      steps.add(json.loads(line)["step"])
    except (ValueError, KeyError):
      pass  # a line being written
  return steps


def _kill_after_step(proc, workdir, step, delay_s):
  """SIGKILL `delay_s` seconds after `step` is logged (or when the process ends by itself: then it finished)."""
  while step not in _logged_steps(workdir):
    if proc.poll() is not None:
      raise AssertionError(f"the run ended before step {step}: {proc.communicate()[1][-3000:]}")
    time.sleep(0.05)
  time.sleep(delay_s)
  proc.send_signal(signal.SIGKILL)
  proc.wait()


@pytest.mark.slow
def test_ten_sigkills_end_with_the_uninterrupted_metrics_and_params(tmp_path):
  rng = random.Random(20)
  full = _start(tmp_path / "full")
  workdir = tmp_path / "chaos"
  kills = []
  # 1. Inside the second checkpoint save (step 20): the write is in flight in Orbax's thread.
  proc = _start(workdir, {"CHAOS_KILL_IN_SAVE": "2"}, child=True)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, proc.communicate()[1][-3000:]
  partial = [n for n in os.listdir(workdir / "checkpoints") if ".orbax-checkpoint-tmp" in n]
  assert partial, "the kill did not land inside the save"
  kills.append(f"inside the save of {partial}")
  # 2. During start-up / restore.
  proc = _start(workdir)
  delay = rng.uniform(2.0, 8.0)
  time.sleep(delay)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  kills.append(f"{delay:.1f} s after start")
  # 3. Right after the first reference reset (step 50), before that step is logged or saved.
  proc = _start(workdir, {"CHAOS_KILL_AFTER_RESET": "1"}, child=True)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL and max(_logged_steps(workdir)) == 49
  kills.append("after the reset of step 50")
  # 4.-10. At random moments of random later steps.
  for step in sorted(rng.sample(range(45, TOTAL - 1), 7)):
    proc = _start(workdir)
    delay = rng.uniform(0.0, 2.5)
    _kill_after_step(proc, workdir, step, delay)
    kills.append(f"{delay:.1f} s after step {step}")
  proc = _start(workdir)
  for p in (full, proc):
    _, err = p.communicate(timeout=3600)
    assert p.returncode == 0, err[-3000:]
  print("killed:", "; ".join(kills))
  assert len(kills) >= 8
  a = [without_timing(r) for r in read_rows(tmp_path / "full")]
  b = [without_timing(r) for r in read_rows(workdir)]
  assert [r["step"] for r in b] == list(range(TOTAL + 1))
  assert a == b
  _, like = models.load_hf(tiny_config().model.path)
  params = []
  for run in (tmp_path / "full", workdir):
    c = checkpointing.Checkpointer(run / "checkpoints", async_save=False)
    params.append(jax.device_get(c.restore_params(TOTAL, like)))
    c.close()
  jax.tree.map(np.testing.assert_array_equal, *params)
