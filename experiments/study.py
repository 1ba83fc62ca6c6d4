"""Test ProRL's claims by ablation: `python -m experiments.study --config=experiments/configs/study_prorl_claims.py
--workdir=runs/study [--smoke] [--variants=prorlv2,no_reset] [--seeds=0,1]`.

Runs every (variant, seed) of the study as an ordinary training run under `<workdir>/runs/<variant>/seed<N>`,
evaluates the chosen checkpoints with many samples per problem, computes each claim's verdict from the numbers and
writes `<workdir>/report.md`, `claims.json` and the PNGs. Rerunning the same command continues where it stopped
(finished runs and evaluated checkpoints are kept). `--smoke` runs the study config's small version (two variants,
one seed, a few steps). Exit codes: 0 done, 1 a run failed (the report covers the others; see its train.log),
2 bad input, 75 stopped by SIGTERM/SIGINT after the runs saved (rerun to continue).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import _cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "A study config (experiments/configs/study_*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory (runs, evaluations, report).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Run the study's smoke version (a few steps, two variants, one seed).")
_VARIANTS = flags.DEFINE_list("variants", [], "Run only these variants, e.g. prorlv2,no_reset.")
_SEEDS = flags.DEFINE_list("seeds", [], "Run only these seeds, e.g. 0,1.")


def main(argv):
  if len(argv) > 1:
    _cli.usage_error(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    _cli.usage_error("--config is required, e.g. --config=experiments/configs/study_prorl_claims.py")
  if not _WORKDIR.value:
    _cli.usage_error("--workdir is required, e.g. --workdir=runs/study")
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    _cli.usage_error(f"--seeds must be integers like 0,1, got {','.join(_SEEDS.value)}")
  logging.getLogger("absl").setLevel(logging.WARNING)
  from prorl_jax.data import DataError
  from prorl_jax.errors import ConfigError
  from prorl_jax.models import ChatTemplateError, CheckpointError
  from prorl_jax.study import StudyStopped, run_study
  from prorl_jax.training import TrainingError

  config_file = flags.FLAGS["config"].config_filename
  command = "python -m experiments.study " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  try:
    with _cli.exit_codes(ConfigError, CheckpointError, ChatTemplateError, DataError, TrainingError):
      result = run_study(_CONFIG.value, config_file, os.path.expanduser(_WORKDIR.value), smoke=_SMOKE.value,
                         variants=_VARIANTS.value, seeds=seeds, command=command,
                         log=lambda m: print(m, flush=True))
  except StudyStopped as e:
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(_cli.EXIT_PREEMPTED)
  for c in result["claims"]:
    print(f"({c['id']}) {c['verdict']}: {c['summary']}")
  print(f"report: {os.path.join(_WORKDIR.value, 'report.md')} ({result['wall_seconds'] / 60:.1f} min)")
  failed = [r["name"] for r in result.get("runs", []) if r["returncode"]]
  if failed:
    print(f"error: runs failed: {', '.join(failed)} (see their train.log)", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=_cli.parse_flags)
