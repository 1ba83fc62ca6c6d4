"""Running a study's training runs: each (variant, seed) is an ordinary `python -m experiments.prorlv2` process in its
own directory, so a run can be reproduced, resumed or inspected by hand exactly like any other.

Resumable: a finished run is recorded in `<run>/study_run.json` and skipped; an unfinished one is started again with
the same command, and the trainer resumes it from its newest checkpoint. A run directory made with another command
(the study's config changed) is refused rather than mixed. SIGTERM / SIGINT are passed on to the running trainers,
which checkpoint and stop (exit 75); rerunning the study continues them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Sequence

from prorl_jax.errors import ConfigError
from prorl_jax.study.spec import Run, Study
from prorl_jax.training import metrics_log

MARKER, COMMAND_FILE, LOG_FILE = "study_run.json", "study_command.json", "train.log"
EXIT_PREEMPTED = 75


class StudyStopped(Exception):
  """SIGTERM / SIGINT reached the study; its runs saved their checkpoints. Rerun the same command to continue."""


@dataclasses.dataclass
class RunOutcome:
  run: Run
  returncode: int
  seconds: float  # wall time of this study's attempts at the run (a resumed run adds up its attempts)
  skipped: bool = False  # finished before this invocation

  @property
  def ok(self) -> bool:
    return self.returncode == 0


def command(study: Study, run: Run) -> list[str]:
  """The training command of `run` (what a user would type to reproduce it)."""
  base = os.path.relpath(study.base_file) if study.base_file.is_relative_to(os.getcwd()) else study.base_file
  return [sys.executable, "-m", "experiments.prorlv2", f"--config={base}", f"--workdir={run.workdir}"] + [
      f"--config.{o}" for o in run.overrides]


def _portable(cmd: Sequence[str]) -> list[str]:
  return ["python"] + list(cmd[1:])  # the interpreter's path differs between machines, not the run


def finished(run: Run) -> dict | None:
  """The marker of a finished run, or None."""
  path = run.workdir / MARKER
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError:
    return None


def check_command(study: Study, run: Run) -> None:
  """Refuses a run directory started with a different command (another base config or overrides)."""
  path = run.workdir / COMMAND_FILE
  if path.exists():
    old = json.loads(path.read_text()).get("command")
    new = _portable(command(study, run))
    if old != new:
      raise ConfigError(f"run {run.name} in {run.workdir} was started with another command ({' '.join(old[1:])}); "
                        f"the study now asks for ({' '.join(new[1:])}): use a new --workdir or delete that run")


def run_all(study: Study, runs: Sequence[Run], *, log: Callable[[str], None] = print) -> list[RunOutcome]:
  """Runs every unfinished run, `study.parallel` at a time; returns their outcomes in `runs` order.

  A run that fails does not stop the others; its outcome carries the exit code and its log is `<run>/train.log`.

  Raises:
    StudyStopped: SIGTERM / SIGINT arrived (passed on to the running trainers, which checkpoint and exit 75; no
      further run starts), or a run was stopped by a signal of its own.
  """
  for run in runs:
    check_command(study, run)
  outcomes: dict[str, RunOutcome] = {}
  todo = []
  for run in runs:
    marker = finished(run)
    if marker is not None:
      outcomes[run.name] = RunOutcome(run, 0, float(marker.get("seconds", 0.0)), skipped=True)
    else:
      todo.append(run)
  running: dict[str, tuple[subprocess.Popen, float, Run]] = {}
  stopping = []

  def forward(signum, _frame):
    stopping.append(signum)
    for proc, _, _ in running.values():
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)

  previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    while todo or running:
      while todo and len(running) < study.parallel and not stopping:
        run = todo.pop(0)
        run.workdir.mkdir(parents=True, exist_ok=True)
        cmd = command(study, run)
        (run.workdir / COMMAND_FILE).write_text(json.dumps({"command": _portable(cmd)}, indent=1) + "\n")
        log(f"[study] training {run.name}: {' '.join(_portable(cmd))}")
        with open(run.workdir / LOG_FILE, "ab") as out:
          # Own process group: a Ctrl-C reaches the study, which passes it on once (a second one would stop the
          # trainers before they save).
          proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                  cwd=os.getcwd())
        running[run.name] = (proc, time.perf_counter(), run)
      if stopping and todo:
        todo.clear()
      time.sleep(0.5)
      for name in list(running):
        proc, start, run = running[name]
        if proc.poll() is None:
          continue
        del running[name]
        seconds = time.perf_counter() - start + _earlier_seconds(run)
        outcomes[name] = RunOutcome(run, proc.returncode, seconds)
        if proc.returncode == 0:
          (run.workdir / MARKER).write_text(json.dumps({"seconds": round(seconds, 1), "returncode": 0}) + "\n")
          log(f"[study] {name} finished in {seconds:.0f} s")
        else:
          _record_attempt(run, seconds)
          log(f"[study] {name} stopped with exit code {proc.returncode} after {seconds:.0f} s; "
              f"log: {run.workdir / LOG_FILE}")
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  if stopping or any(o.returncode == EXIT_PREEMPTED for o in outcomes.values()):
    name = signal.Signals(stopping[0]).name if stopping else "a signal to a training run"
    raise StudyStopped(f"by {name}: the runs saved their checkpoints; rerun the same command to continue")
  return [outcomes[r.name] for r in runs if r.name in outcomes]


def _earlier_seconds(run: Run) -> float:
  path = run.workdir / "study_attempts.json"
  return float(json.loads(path.read_text()).get("seconds", 0.0)) if path.exists() else 0.0


def _record_attempt(run: Run, seconds: float) -> None:
  (run.workdir / "study_attempts.json").write_text(json.dumps({"seconds": round(seconds, 1)}) + "\n")


def read_metrics(run: Run) -> list[dict]:
  """The run's metrics.jsonl rows (one per step: a resumed run drops the rows after its checkpoint first)."""
  return metrics_log.read_metrics(run.workdir)
