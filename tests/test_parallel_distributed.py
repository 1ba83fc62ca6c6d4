"""Multi-host start-up (two real processes over localhost) and the per-process data helpers."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from prorl_jax import parallel
from prorl_jax.errors import ConfigError
from prorl_jax.training import Trainer
from prorl_jax.training import config as config_lib
from training_helpers import small_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
_LAUNCH_VARS = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS",
                "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")


@pytest.fixture
def clean_env(monkeypatch):
  for var in _LAUNCH_VARS:
    monkeypatch.delenv(var, raising=False)
  return monkeypatch


def test_launch_environment_detection(clean_env):
  assert parallel.launch_environment() == ""
  clean_env.setenv("SLURM_JOB_ID", "12")
  clean_env.setenv("SLURM_NTASKS", "1")
  assert parallel.launch_environment() == ""  # a one-task Slurm job is a single process
  clean_env.setenv("SLURM_NTASKS", "4")
  assert parallel.launch_environment() == "slurm"
  clean_env.delenv("SLURM_JOB_ID")
  clean_env.setenv("TPU_WORKER_HOSTNAMES", "t0,t1")
  assert parallel.launch_environment() == "cloud_tpu"
  clean_env.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  assert parallel.launch_environment() == "JAX_COORDINATOR_ADDRESS"


def test_single_process_run_does_not_initialize(clean_env):
  assert parallel.maybe_initialize(config_lib.default_config()) is False
  assert not jax.distributed.is_initialized()


@pytest.mark.parametrize("field,value,match", [("num_processes", -2, "num_processes must be >= 0"),
                                               ("process_id", 3, "process_id must be -1")])
def test_bad_distributed_fields_are_named(field, value, match):
  config = config_lib.default_config()
  config.distributed.num_processes = 2
  config.distributed[field] = value
  with pytest.raises(ConfigError, match=f"config.distributed.{match}"):
    parallel.maybe_initialize(config)


def test_single_process_data_helpers():
  mesh = parallel.make_mesh(dict(data=2, fsdp=2, tensor=2))
  assert parallel.process_rows(mesh, 12) == slice(0, 12)
  assert parallel.data_shard(mesh, 12) == (0, 1)
  local = {"ids": np.arange(24).reshape(12, 2), "mask": np.ones(12, bool)}
  batch = parallel.global_batch(local, mesh)
  np.testing.assert_array_equal(np.asarray(batch["ids"]), local["ids"])
  assert batch["ids"].sharding.spec == parallel.rows_spec((12, 2), mesh)
  assert batch["ids"].addressable_shards[0].data.shape == (3, 2)


_WORKER = r"""
import json, os, sys
import jax, numpy as np, ml_collections
jax.config.update("jax_cpu_collectives_implementation", "gloo")
from prorl_jax import parallel
pid = int(sys.argv[1])
config = ml_collections.ConfigDict(dict(distributed=dict(initialize=False, coordinator_address="", num_processes=2,
                                                         process_id=pid)))
assert parallel.launch_environment() == "JAX_COORDINATOR_ADDRESS"
assert parallel.maybe_initialize(config)
mesh = parallel.make_mesh(dict(data=2, fsdp=2, tensor=1))
rows = parallel.process_rows(mesh, 8)
data = np.arange(24, dtype=np.float32).reshape(8, 3)
batch = parallel.global_batch({"x": data[rows]}, mesh)
# A reduction over the global batch needs the other process's rows.
total = float(jax.jit(lambda t: (t["x"] * jax.numpy.arange(8.0)[:, None]).sum())(batch))
print(json.dumps(dict(count=jax.process_count(), devices=jax.device_count(), local=jax.local_device_count(),
                      rows=[rows.start, rows.stop], shard=parallel.data_shard(mesh, 8), total=total,
                      shape=list(batch["x"].shape))), flush=True)
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_share_one_mesh(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(_WORKER)
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_COORDINATOR_ADDRESS=f"localhost:{_free_port()}",
             PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
  procs = [subprocess.Popen([sys.executable, str(script), str(i)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=180)
      assert p.returncode == 0, err[-3000:]
      outs.append(json.loads(out.strip().splitlines()[-1]))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  data = np.arange(24, dtype=np.float32).reshape(8, 3)
  want = float((data * np.arange(8.0)[:, None]).sum())
  for pid, out in enumerate(outs):
    assert out["count"] == 2 and out["devices"] == 4 and out["local"] == 2
    assert out["rows"] == [4 * pid, 4 * pid + 4] and out["shard"] == [pid, 2]
    assert out["shape"] == [8, 3] and out["total"] == want


# The run of the two-process tests: tiny.py shrunk to seconds per step, mesh data=2 x fsdp=2 over 2 processes.
_RUN = {"eval_every": 2, "checkpoint_every": 1, "data.train": "embedded:tiny?size=300",
        "data.validation": "embedded:tiny?size=12", "rollout.n": 4, "batch.prompts": 4, "batch.gen_prompts": 8,
        "batch.mini_batch_prompts": 2, "eval.num_samples": 2, "eval.batch_prompts": 12}


def _launch_training(workdir, steps: int, port: int) -> list[subprocess.CompletedProcess]:
  """The README's training command as two processes of one run (2 CPU devices each, mesh data=2 x fsdp=2)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_COORDINATOR_ADDRESS=f"localhost:{port}")
  flags = [f"--workdir={workdir}", "--config=experiments/configs/tiny.py", f"--config.total_steps={steps}",
           *(f"--config.{k}={v}" for k, v in _RUN.items()), "--config.mesh.data=2", "--config.mesh.fsdp=2",
           "--config.mesh.tensor=1", "--config.distributed.num_processes=2"]
  procs = [subprocess.Popen([sys.executable, "-m", "experiments.prorlv2", *flags,
                             f"--config.distributed.process_id={i}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  done = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=400)
      done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, d in enumerate(done):
    assert d.returncode == 0, f"process {i}:\n{d.stderr[-4000:]}"
  return done


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_two_process_training_run(tmp_path):
  # Each process samples and scores its own 2 prompts x 4 samples; the update sees all 16 rows of both.
  _launch_training(tmp_path / "run", steps=2, port=_free_port())
  rows = _rows(tmp_path / "run" / "metrics.jsonl")
  assert [r["step"] for r in rows] == [0, 1, 2]
  for r in rows[1:]:
    assert r["batch/rows"] == 16 and np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"])
  assert "eval/score@1" in rows[2] and "eval/pass@1" in rows[2] and rows[2]["kl"] > 0
  # Validation is split over the processes (every other problem) and gathered: the step-0 numbers equal one
  # process evaluating every problem with the same initial params.
  trainer = Trainer(small_config(**_RUN, **{"mesh.devices": 1}), tmp_path / "reference", show_progress=False)
  try:
    want = trainer.evaluate()
  finally:
    trainer.close()
  for key in ("eval/score@1", "eval/pass@1", "eval/pass@2", "eval/mean_length"):
    assert rows[0][key] == pytest.approx(want[key], abs=1e-9), key
  # Process 1 logged the same (reduced) metrics under its own directory; process 0 wrote the run's files.
  other = _rows(tmp_path / "run" / "process_1" / "metrics.jsonl")
  assert [r.get("loss") for r in other] == [r.get("loss") for r in rows]
  assert (tmp_path / "run" / "training_curves.png").exists() and (tmp_path / "run" / "final_hf").exists()
  # The checkpoint keeps each process's own data position.
  host = json.loads((tmp_path / "run" / "checkpoints" / "2" / "host_state" / "metadata").read_text())
  shards = [d["fingerprint"]["process_index"] for d in host["data_by_process"]]
  assert shards == [0, 1]


@pytest.mark.slow
def test_two_process_run_resumes(tmp_path):
  _launch_training(tmp_path / "run", steps=2, port=_free_port())
  done = _launch_training(tmp_path / "run", steps=3, port=_free_port())
  assert all("resumed from the checkpoint of step 2" in d.stderr for d in done)
  rows = _rows(tmp_path / "run" / "metrics.jsonl")
  assert [r["step"] for r in rows] == [0, 1, 2, 3] and rows[3]["batch/rows"] == 16
