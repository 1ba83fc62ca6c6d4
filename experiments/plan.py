"""Plans a run on accelerators you do not have: `python -m experiments.plan --config=CONFIG --topology=v5p:2x2x2`.

Compiles one training step of the config for the topology's devices (deviceless: libtpu for TPUs, `pip install -e
.[tpu-aot]`), prints per phase the per-device memory against HBM, the loop-aware FLOPs and bytes, a roofline time and
the whole-step estimate, and writes the plan to `--json`. Exit codes: 0 every phase fits, 3 a phase does not (the
message names the phase, how far over, and the config fields predicted to bring it under), 2 bad input (unknown
topology or model, bad config field). Any config field can be overridden, e.g. `--config.batch.micro_batch_size=8`.
"""

from __future__ import annotations

import json
import logging
import os
import sys

# This process compiles for devices it does not have: it stays on the CPU backend (set before jax is imported, which
# loading the config file does; importing prorl_jax tells libtpu there is no TPU here).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import _cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.",
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "e.g. v5p:2x2x2, v5e:2x4, v6e-8, v5p-8, h100:8")
_SLICES = flags.DEFINE_integer("num_slices", 1, "TPU slices joined over DCN (the data axis spans them).")
_JSON = flags.DEFINE_string("json", None, "Write the plan as JSON to this path.")
_HBM = flags.DEFINE_float("hbm_gib", None, "Plan against this much memory per device instead of the chip's HBM.")
_DUMP = flags.DEFINE_string("dump_hlo", None, "Write each compiled program's optimized HLO to this directory.")
_VERIFY = flags.DEFINE_bool("verify_fixes", True, "Compile a phase that does not fit again with the suggested fixes "
                            "(the first two) to confirm one.")
_QUIET = flags.DEFINE_bool("quiet", False, "Print only the table (no progress lines).")

FITS, DOES_NOT_FIT, BAD_INPUT, NO_COMPILER = 0, 3, 2, 4


def main(argv):
  if len(argv) > 1:
    _cli.usage_error(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    _cli.usage_error("--config is required, e.g. --config=experiments/configs/nemotron_1p5b_prorlv2.py")
  if not _TOPOLOGY.value:
    _cli.usage_error("--topology is required, e.g. --topology=v5p:2x2x2")
  logging.getLogger("absl").setLevel(logging.WARNING)
  logging.getLogger("kernels").setLevel(logging.WARNING)  # the plan names the decode kernel it finds
  from prorl_jax import planning
  from prorl_jax.errors import ConfigError
  from prorl_jax.models import CheckpointError
  from prorl_jax.parallel.topology import TopologyUnavailable

  log = (lambda _: None) if _QUIET.value else (lambda msg: print(f"[plan] {msg}", file=sys.stderr, flush=True))
  try:
    result = planning.plan(_CONFIG.value, _TOPOLOGY.value, _SLICES.value, hbm_gib=_HBM.value,
                           dump_hlo=_DUMP.value, verify=_VERIFY.value, log=log)
  except (ConfigError, CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(BAD_INPUT)
  except TopologyUnavailable as e:
    print(f"error: cannot compile for {_TOPOLOGY.value}: {e}", file=sys.stderr)
    sys.exit(NO_COMPILER)
  print(planning.table(result))
  if _JSON.value:
    os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
    with open(_JSON.value, "w") as f:
      json.dump(result, f, indent=2)
  if not result["fits"]:
    print("does not fit:\n" + planning.failure_message(result), file=sys.stderr)
    sys.exit(DOES_NOT_FIT)


if __name__ == "__main__":
  app.run(main, flags_parser=_cli.parse_flags)
