"""Evaluate a checkpoint the way ProRL reports it: k samples per problem, score@1 (ProRL's headline "pass@1", the
mean score) and pass@k curves of fully correct samples.

  python -m experiments.evaluate --config=experiments/configs/tiny.py --checkpoint=runs/tiny/final_hf \
      --baseline=prorl_jax/assets/tiny --workdir=runs/tiny_eval

--checkpoint / --baseline take a Hugging Face directory or hub id, or one of our trainer's Orbax checkpoints (a run
workdir, its checkpoints/<step> folder, or WORKDIR@STEP). Benchmarks come from --benchmarks (";"-separated specs
such as benchmark:aime2024, embedded:tiny, a .jsonl file) or the config's eval.benchmarks / data.validation.
Sampling follows config.eval (ProRL: 16 samples, temperature 0.6, top-p 0.95). Writes per checkpoint
<workdir>/<label>/results.jsonl (resumable) and summary.json, then <workdir>/summary.json and pass_at_k.png.
"""

from __future__ import annotations

import json
import logging
import os

from absl import app, flags
from ml_collections import config_flags

from experiments import _cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.",
                                          lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint to evaluate (HF dir, hub id, or Orbax run).")
_BASELINE = flags.DEFINE_string("baseline", "", "Optional second checkpoint, drawn on the same pass@k axes.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results, summaries and the plot go.")
_BENCHMARKS = flags.DEFINE_string("benchmarks", "", "';'-separated dataset specs (default: from the config).")
_LIMIT = flags.DEFINE_integer("limit", 0, "At most this many problems per benchmark spec (0 = all).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Discard results made with other settings instead of failing.")


def main(argv):
  if len(argv) > 1:
    _cli.usage_error(f"unexpected arguments: {argv[1:]}")
  for flag, example in ((_CONFIG, "experiments/configs/tiny.py"), (_CHECKPOINT, "runs/tiny/final_hf"),
                        (_WORKDIR, "runs/tiny_eval")):
    if not flag.value:
      _cli.usage_error(f"--{flag.name} is required, e.g. --{flag.name}={example}")
  logging.getLogger("absl").setLevel(logging.WARNING)
  from prorl_jax.data import DataError
  from prorl_jax.training.evaluate import run_evaluation
  from prorl_jax.errors import ConfigError
  from prorl_jax.models import ChatTemplateError, CheckpointError
  from prorl_jax.training import TrainingError

  checkpoints = ([("baseline", _BASELINE.value)] if _BASELINE.value else []) + [("checkpoint", _CHECKPOINT.value)]
  specs = [s for s in _BENCHMARKS.value.split(";") if s]
  with _cli.exit_codes(ConfigError, CheckpointError, ChatTemplateError, DataError, TrainingError, ValueError):
    report = run_evaluation(_CONFIG.value, checkpoints, os.path.expanduser(_WORKDIR.value), specs=specs,
                            limit=_LIMIT.value or None, overwrite=_OVERWRITE.value)
  print(json.dumps({"score@1": report["score@1"], "pass@1": report["pass@1"]}, indent=2))


if __name__ == "__main__":
  app.run(main, flags_parser=_cli.parse_flags)
