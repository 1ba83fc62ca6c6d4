"""`python -m experiments.study --smoke` end to end on the shipped chain checkpoint: two variants, one seed, a few
steps, real training processes and evaluation; the public claims.json format; a rerun that continues instead of
starting again; one-line errors."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
STUDY = "experiments/configs/study_prorl_claims.py"
VERDICTS = {"supported", "not supported", "inconclusive"}


def study(*args, timeout=600):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return subprocess.run([sys.executable, "-m", "experiments.study", f"--config={STUDY}", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("study")
  proc = study(f"--workdir={workdir}", "--smoke")
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return workdir, proc


def test_smoke_writes_the_public_report(smoke):
  workdir, proc = smoke
  claims = json.loads((workdir / "claims.json").read_text())
  assert [c["id"] for c in claims["claims"]] == ["a", "b", "c", "d", "e"]
  for c in claims["claims"]:
    assert c["verdict"] in VERDICTS and c["statement"] and isinstance(c["evidence"], dict)
  assert claims["variants"] == ["prorlv2", "no_reset"] and claims["seeds"] == [0]
  assert 0 < claims["wall_seconds"] < 600
  # The claims whose variants did not run say so; those that ran carry their numbers.
  by_id = {c["id"]: c for c in claims["claims"]}
  assert by_id["c"]["verdict"] == "inconclusive" and by_id["c"]["evidence"]["missing_variants"] == ["symmetric_clip"]
  assert by_id["a"]["evidence"]["base_hard"] is not None and "per_seed" in by_id["b"]["evidence"]
  report = (workdir / "report.md").read_text()
  assert "## Claims" in report and "| a |" in report and "chain/L8" in report
  for png in ("pass_at_k_prorlv2.png", "scores_vs_steps.png", "dynamics.png"):
    assert (workdir / png).read_bytes()[:4] == b"\x89PNG", png
    assert f"]({png})" in report
  # Every run is an ordinary training run; the evaluated checkpoint has results per problem.
  for variant in ("prorlv2", "no_reset"):
    run = workdir / "runs" / variant / "seed0"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 4 and all("rollout/samples" in r for r in rows if r["step"] > 0)
    assert json.loads((run / "study_command.json").read_text())["command"][:3] == ["python", "-m",
                                                                                  "experiments.prorlv2"]
  assert (workdir / "eval" / "base" / "results.jsonl").exists()
  assert (workdir / "eval" / "prorlv2" / "seed0" / "step4" / "summary.json").exists()
  assert "(a) " in proc.stdout and "report:" in proc.stdout


def test_rerun_continues_and_changed_settings_are_refused(smoke):
  workdir, _ = smoke
  before = (workdir / "runs" / "prorlv2" / "seed0" / "metrics.jsonl").read_text()
  proc = study(f"--workdir={workdir}", "--smoke")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "[study] training" not in proc.stdout  # finished runs are not started again
  assert (workdir / "runs" / "prorlv2" / "seed0" / "metrics.jsonl").read_text() == before
  # The same directory with other settings for a run would mix two studies: refused, nothing started.
  proc = study(f"--workdir={workdir}", "--smoke",
               "--config.overrides=('checkpoint.keep_latest=9', 'checkpoint.export_hf=False')")
  assert proc.returncode == 2 and "was started with another command" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("args,message", [
    (["--smoke", "--variants=prorlv3"], "unknown variant(s) ['prorlv3']"),
    (["--config.eval.num_sampels=4"], "did you mean --config.eval.num_samples?"),
    (["--seeds=a"], "--seeds must be integers"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
  proc = study(f"--workdir={tmp_path}", *args, timeout=120)
  assert proc.returncode == 2
  assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_sigterm_stops_the_runs_with_75_and_the_rerun_finishes(tmp_path):
  import signal
  import time
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  proc = subprocess.Popen([sys.executable, "-m", "experiments.study", f"--config={STUDY}", f"--workdir={tmp_path}",
                           "--smoke"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = tmp_path / "runs" / "prorlv2" / "seed0" / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and not (metrics.exists() and '"step": 1' in metrics.read_text()):
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 75, out[-2000:] + err[-2000:]
  assert "by SIGTERM" in err and "rerun the same command" in err
  assert not (tmp_path / "runs" / "no_reset").exists()  # no run started after the signal
  assert not (tmp_path / "runs" / "prorlv2" / "seed0" / "study_run.json").exists()
  again = study(f"--workdir={tmp_path}", "--smoke")
  assert again.returncode == 0, again.stderr[-3000:]
  rows = [json.loads(line) for line in metrics.read_text().splitlines()]
  assert [r["step"] for r in rows] == list(range(5))  # resumed, one row per step
