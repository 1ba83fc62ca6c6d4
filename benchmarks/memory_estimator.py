"""The hand memory model (`prorl_jax.training.memory`) against the TPU compiler, phase by phase; prints JSON.

For a spread of runs (model sizes, meshes, micro-batches, remat on and off, sequence lengths) it plans each one
deviceless (`prorl_jax.planning.plan`: the trainer's programs compiled for the topology) and compares the memory
model's per-device peak of every phase with the compiled one. Needs libtpu (`pip install -e .[tpu-aot]`); a run of
the whole spread takes about an hour on 2 cores.

  python -m benchmarks.memory_estimator                       # the whole spread
  python -m benchmarks.memory_estimator --cases 1.5b_fsdp4_4k,7b_fsdp8 --out estimator.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout without installing

NEMOTRON = "experiments/configs/nemotron_1p5b_prorlv2.py"
SEVEN_B = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
# name: (topology, config overrides). The nemotron config (1.5B, bf16 compute, fp32 params, bf16 reference) unless
# model.path says otherwise.
CASES: dict[str, tuple[str, dict]] = {
    "1.5b_fsdp8_9k": ("v5p:2x2x2", {}),  # the real run: 1024 + 8192 tokens, micro-batch 16, remat
    "1.5b_fsdp4_4k": ("v5p:2x2x1", {"rollout.max_new_tokens": 3072, "batch.micro_batch_size": 8}),
    "1.5b_fsdp4_4k_noremat": ("v5p:2x2x1", {"rollout.max_new_tokens": 3072, "batch.micro_batch_size": 8,
                                            "model.remat": False}),
    "1.5b_fsdp4_2k_micro16": ("v5p:2x2x1", {"rollout.max_new_tokens": 1024, "batch.micro_batch_size": 16}),
    "1.5b_dp2_fsdp2_2k": ("v5p:2x2x1", {"rollout.max_new_tokens": 1024, "batch.micro_batch_size": 8,
                                        "mesh.data": 2, "mesh.fsdp": 2}),
    "1.5b_tp2_v5e8_5k": ("v5e:2x4", {"rollout.max_new_tokens": 4096, "batch.micro_batch_size": 8,
                                     "mesh.tensor": 2}),
    "1.5b_fp32_params_ref_4k": ("v5p:2x2x1", {"rollout.max_new_tokens": 3072, "batch.micro_batch_size": 8,
                                              "model.ref_param_dtype": "float32"}),
    "7b_fsdp8_3k": ("v5p:2x2x2", {"model.path": SEVEN_B, "rollout.max_new_tokens": 2048,
                                  "batch.micro_batch_size": 8}),
}


def _config(overrides: dict):
  from ml_collections import config_flags  # noqa: F401  (the config file imports prorl_jax)
  import importlib.util
  spec = importlib.util.spec_from_file_location("nemotron", NEMOTRON)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  from prorl_jax.planning import planner
  return planner.with_changes(module.get_config(), overrides)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {list(CASES)}")
  p.add_argument("--out", default="", help="also write the JSON here")
  args = p.parse_args()
  from prorl_jax import planning

  names = [n for n in args.cases.split(",") if n]
  unknown = [n for n in names if n not in CASES]
  if unknown:
    p.error(f"unknown cases {unknown}; choose from {list(CASES)}")
  rows = []
  for name in names:
    topo, overrides = CASES[name]
    start = time.perf_counter()
    result = planning.plan(_config(overrides), topo)
    for phase, entry in result["phases"].items():
      rows.append({"case": name, "topology": topo, "overrides": overrides, "phase": phase,
                   "compiled_gib": entry["peak_gib"], "estimator_gib": entry["estimator_gib"],
                   "error": entry["estimator_error"]})
    print(f"[memory_estimator] {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
  errors = [abs(r["error"]) for r in rows]
  out = {"rows": rows, "max_abs_error": max(errors), "mean_abs_error": sum(errors) / len(errors),
         "within_15pct": sum(e <= 0.15 for e in errors), "count": len(errors)}
  text = json.dumps(out, indent=2)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text)


if __name__ == "__main__":
  main()
