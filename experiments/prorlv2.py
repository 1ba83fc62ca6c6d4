"""ProRLv2 training: `python -m experiments.prorlv2 --config=experiments/configs/tiny.py --workdir=runs/tiny`.

Any config field can be overridden on the command line, e.g. `--config.total_steps=50 --config.rollout.n=4`.
Rerunning the same command with the same workdir resumes from the newest usable checkpoint. Exit codes: 0 finished,
2 bad input, 74 a checkpoint could not be written (disk full), 75 stopped by SIGTERM/SIGINT after saving
(`experiments/_cli.py`).
"""

from __future__ import annotations

import logging
import os

from absl import app, flags
from ml_collections import config_flags

from experiments import _cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics.jsonl, TensorBoard, plots).")
_PROFILE = flags.DEFINE_list("profile_steps", [], "First and last step to capture with jax.profiler, e.g. 3,4.")


def main(argv):
  if len(argv) > 1:
    _cli.usage_error(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    _cli.usage_error("--config is required, e.g. --config=experiments/configs/tiny.py")
  if not _WORKDIR.value:
    _cli.usage_error("--workdir is required, e.g. --workdir=runs/tiny")
  logging.getLogger("absl").setLevel(logging.WARNING)
  # Imported after flag parsing so `--help` is fast and config errors surface before JAX starts.
  from prorl_jax.data import DataError
  from prorl_jax.errors import ConfigError
  from prorl_jax.models import ChatTemplateError, CheckpointError
  from prorl_jax.parallel import maybe_initialize
  from prorl_jax.training import TrainingError, train

  try:
    profile = [int(s) for s in _PROFILE.value]
  except ValueError as e:
    _cli.usage_error(f"--profile_steps must be integers like 3,4: {e}")
  with _cli.exit_codes(ConfigError, CheckpointError, ChatTemplateError, DataError, TrainingError):
    maybe_initialize(_CONFIG.value)
    train(_CONFIG.value, os.path.expanduser(_WORKDIR.value), profile_steps=profile)


if __name__ == "__main__":
  app.run(main, flags_parser=_cli.parse_flags)
