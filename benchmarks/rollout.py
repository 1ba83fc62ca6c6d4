"""Rollout throughput: prorl_jax's sampler against transformers `generate` on the same weights, in one run.

Prints one JSON object: tokens/s of each engine (greedy, fixed prompt and generation lengths, no EOS stops),
the ratio, the decode FLOP/s (the decode loop's FLOPs over its own time, from the sampler's phase timing) and the
whole generate call's FLOP/s (prefill + decode FLOPs over its wall time), each as a fraction of this machine's
matmul FLOP/s measured in the same run, peak memory, and (when a tunix venv is given) google-tunix's vanilla sampler
on the same checkpoint.

  python -m benchmarks.rollout                       # the issue's setting: batch 32, prompt 64, 128 new tokens
  python -m benchmarks.rollout --hidden=256 --layers=4 --batch=8 --new_tokens=32   # quicker
  python -m benchmarks.rollout --decode_layout=rows  # the accelerator-style decode step, on CPU
  PRORL_JAX_NATIVE_KERNELS=0 python -m benchmarks.rollout  # the column step with XLA instead of the native kernels
  python -m benchmarks.rollout --tunix_python=/path/to/tunixvenv/bin/python
  python -m benchmarks.rollout --workload=longtail   # long-tailed lengths: continuous vs static batching vs generate

The long-tail workload samples at temperature 1 with a set of EOS ids large enough that a random model ends its
responses at random: k EOS ids out of V give geometric lengths of mean about V / k, here max_new_tokens / 6, so a few
rows run to the cap. It reports useful (generated) tokens/s of continuous and static batching and of transformers
`generate` on the same weights and workload, each with as many rows at once as the sampler has slots
(`--slots`), the sampler's slot occupancy, whether continuous and static batching drew identical tokens, and peak
memory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.common import add_model_flags, peak_rss_mib, save_random_qwen2


def _parse():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  add_model_flags(p, hidden=512, intermediate=1408, layers=8, heads=8)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--prompt", type=int, default=64)
  p.add_argument("--new_tokens", type=int, default=128)
  p.add_argument("--repeats", type=int, default=None, help="timed runs, best kept (default 3; longtail 1)")
  p.add_argument("--devices", type=int, default=0,
                 help="CPU devices to spread the batch over (0: all local devices the run was started with)")
  p.add_argument("--engines", default="prorl_jax,transformers")
  p.add_argument("--decode_layout", default="auto", choices=("auto", "rows", "columns"),
                 help="the sampler's decode layout (auto: columns on one CPU device)")
  p.add_argument("--tunix_python", default="", help="python of a venv with google-tunix installed")
  p.add_argument("--threads", type=int, default=os.cpu_count())
  p.add_argument("--workload", default="fixed", choices=("fixed", "longtail"))
  p.add_argument("--prompts", type=int, default=16, help="longtail: prompts (each sampled --samples times)")
  p.add_argument("--samples", type=int, default=16, help="longtail: samples per prompt")
  p.add_argument("--max_new_tokens", type=int, default=768, help="longtail: the length cap")
  p.add_argument("--slots", type=int, default=32, help="longtail: rows decoded at once (sampler slots)")
  p.add_argument("--refill_fraction", type=float, default=0.0, help="longtail: the sampler's (0: its default)")
  return p.parse_args()


def _decode_flops_per_token(cfg, context: float) -> float:
  """2 × matmul params touched per token, plus attention over `context` cached positions (QK and PV)."""
  d = cfg.dims_per_head
  per_layer = (cfg.hidden_size * d * (cfg.num_attention_heads + 2 * cfg.num_key_value_heads)
               + cfg.num_attention_heads * d * cfg.hidden_size + 3 * cfg.hidden_size * cfg.intermediate_size)
  attn = 2 * cfg.num_attention_heads * d * context
  return cfg.num_hidden_layers * (2 * per_layer + 2 * attn) + 2 * cfg.hidden_size * cfg.vocab_size


def _prefill_flops(cfg, batch: int, prompt: int) -> float:
  """Prefill of `batch` prompts of `prompt` tokens: layers for every token (causal attention over half the prompt
  on average) and the LM head for the last token of each row."""
  head = 2 * cfg.hidden_size * cfg.vocab_size
  return batch * (prompt * (_decode_flops_per_token(cfg, prompt / 2) - head) + head)


def bench_prorl_jax(ckpt, args):
  import jax
  import numpy as np
  import kernels
  from prorl_jax import models, rollout

  config, params = models.load_hf(ckpt)
  prompts = np.random.RandomState(0).randint(3, args.vocab, size=(args.batch, args.prompt)).tolist()
  devices = jax.local_devices()[:args.devices] if args.devices else jax.local_devices()
  mesh = None
  if len(devices) > 1:
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
  sampler = rollout.Sampler(config, mesh=mesh, decode_layout=args.decode_layout)
  kw = dict(max_new_tokens=args.new_tokens, sampling=rollout.SamplingParams(temperature=0.0), eos_token_ids=[])
  t = time.perf_counter()
  first = sampler.generate(params, prompts, **kw)
  compile_s = time.perf_counter() - t
  times, phases = [], []
  for _ in range(args.repeats):
    t = time.perf_counter()
    out = sampler.generate(params, prompts, **kw)
    times.append(time.perf_counter() - t)
    phases.append((out.stats["prefill_seconds"], out.stats["decode_seconds"], out.stats["decode_steps"]))
  assert (out.lengths == args.new_tokens).all()
  best = min(times)
  prefill_s, decode_s, steps = min(phases, key=lambda p: p[1])
  return {"tokens_per_s": args.batch * args.new_tokens / best, "seconds": best, "first_call_s": compile_s,
          "prefill_s": prefill_s, "decode_s": decode_s, "decode_ms_per_step": 1e3 * decode_s / max(steps, 1),
          "decode_steps": steps, "devices": len(devices), "decode_layout": out.stats["decode_layout"],
          "column_matmul": kernels.native_status(),
          "tokens": out.tokens.tolist()}, config, first


def bench_transformers(ckpt, args):
  import torch
  import transformers

  torch.set_num_threads(args.threads)
  model = transformers.AutoModelForCausalLM.from_pretrained(ckpt).eval()
  import numpy as np
  ids = torch.tensor(np.random.RandomState(0).randint(3, args.vocab, size=(args.batch, args.prompt)))
  kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
            do_sample=False, pad_token_id=0)
  with torch.no_grad():
    model.generate(ids, **kw)
    times = []
    for _ in range(args.repeats):
      t = time.perf_counter()
      out = model.generate(ids, **kw)
      times.append(time.perf_counter() - t)
  best = min(times)
  return {"tokens_per_s": args.batch * args.new_tokens / best, "seconds": best, "threads": torch.get_num_threads(),
          "tokens": out[:, args.prompt:].tolist()}


def _longtail_inputs(args):
  import numpy as np
  rng = np.random.RandomState(0)
  prompts = rng.randint(3, args.vocab, size=(args.prompts, args.prompt)).tolist()
  k = max(1, round(6 * args.vocab / args.max_new_tokens))  # mean length ~ vocab / k = max_new_tokens / 6
  eos = list(range(3, 3 + k))
  return prompts, eos


def bench_longtail_prorl_jax(ckpt, args):
  """Useful tokens/s of continuous and static batching on the long-tail workload, the same seed for both."""
  import numpy as np
  from prorl_jax import models, rollout

  config, params = models.load_hf(ckpt)
  prompts, eos = _longtail_inputs(args)
  kw = dict(max_new_tokens=args.max_new_tokens, sampling=rollout.SamplingParams(temperature=1.0),
            num_samples=args.samples, eos_token_ids=eos, seed=0)
  out, batches = {}, {}
  for batching in ("continuous", "static"):
    sampler = rollout.Sampler(config, batching=batching, max_rows_per_chunk=args.slots,
                              refill_fraction=args.refill_fraction or None)
    # Compiles what the timed runs use (inserts, slot counts, cache windows): the same workload under another seed.
    sampler.generate(params, prompts, **dict(kw, seed=1))
    runs = []
    for _ in range(args.repeats):
      t = time.perf_counter()
      batch = sampler.generate(params, prompts, **kw)
      runs.append((time.perf_counter() - t, batch))
      print(f"[rollout] {batching}: {runs[-1][0]:.1f} s", file=sys.stderr, flush=True)
    best, batch = min(runs, key=lambda r: r[0])
    batches[batching] = batch
    generated = int(batch.lengths.sum())
    out[batching] = {"useful_tokens_per_s": generated / best, "seconds": best, "generated_tokens": generated,
                     "decode_steps": batch.stats["decode_steps"], "slots": batch.stats["slots"],
                     "slot_occupancy": batch.stats["slot_occupancy"], "prefills": batch.stats["prefills"],
                     "prefill_s": batch.stats["prefill_seconds"], "decode_s": batch.stats["decode_seconds"],
                     "decode_layout": batch.stats["decode_layout"]}
  c, st = batches["continuous"], batches["static"]
  same = (c.tokens == st.tokens).all(axis=1) & (c.lengths == st.lengths)
  out["identical_rows"] = float(same.mean())
  out["max_logprob_difference"] = float(np.abs(c.logprobs - st.logprobs).max())
  out["mean_length"] = float(c.lengths.mean())
  out["truncated_rows"] = int((~c.finished_by_eos).sum())
  return out


def bench_longtail_transformers(ckpt, args):
  """transformers `generate` on the same workload, `--slots` rows per call (each call runs to its longest row)."""
  import numpy as np
  import torch
  import transformers

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  model = transformers.AutoModelForCausalLM.from_pretrained(ckpt).eval()
  prompts, eos = _longtail_inputs(args)
  rows = np.repeat(np.asarray(prompts), args.samples, axis=0)
  kw = dict(max_new_tokens=args.max_new_tokens, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
            eos_token_id=eos, pad_token_id=0)
  best, generated = float("inf"), 0
  with torch.no_grad():
    model.generate(torch.tensor(rows[:2]), attention_mask=torch.ones((2, rows.shape[1]), dtype=torch.long),
                   **dict(kw, max_new_tokens=4))
    for _ in range(max(1, args.repeats - 1)):
      t, count = time.perf_counter(), 0
      for start in range(0, len(rows), args.slots):
        ids = torch.tensor(rows[start:start + args.slots])
        new = model.generate(ids, attention_mask=torch.ones_like(ids), **kw)[:, ids.shape[1]:].numpy()
        hit = np.isin(new, eos)
        count += int(np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, new.shape[1]).sum())
      elapsed = time.perf_counter() - t
      print(f"[rollout] transformers: {elapsed:.1f} s", file=sys.stderr, flush=True)
      if elapsed < best:
        best, generated = elapsed, count
  return {"useful_tokens_per_s": generated / best, "seconds": best, "generated_tokens": generated,
          "threads": torch.get_num_threads()}


def main_longtail(args):
  ckpt = tempfile.mkdtemp(prefix="rollout_bench_")
  n_params = save_random_qwen2(args, ckpt)
  _, eos = _longtail_inputs(args)
  result = {"setting": {"workload": "longtail", "prompts": args.prompts, "samples": args.samples,
                        "rows": args.prompts * args.samples, "prompt": args.prompt,
                        "max_new_tokens": args.max_new_tokens, "eos_ids": len(eos), "slots": args.slots,
                        "params_millions": round(n_params / 1e6, 2), "dtype": "float32", "temperature": 1.0,
                        "cpu_count": os.cpu_count()}}
  engines = args.engines.split(",")
  if "prorl_jax" in engines:
    result["prorl_jax"] = bench_longtail_prorl_jax(ckpt, args)
  if "transformers" in engines:
    result["transformers"] = bench_longtail_transformers(ckpt, args)
  ours = result.get("prorl_jax", {})
  if ours:
    result["continuous_vs_static"] = round(ours["continuous"]["useful_tokens_per_s"]
                                           / ours["static"]["useful_tokens_per_s"], 2)
  if ours and "transformers" in result:
    result["continuous_vs_transformers"] = round(ours["continuous"]["useful_tokens_per_s"]
                                                 / result["transformers"]["useful_tokens_per_s"], 2)
  result["peak_rss_mib"] = round(peak_rss_mib(), 1)
  shutil.rmtree(ckpt, ignore_errors=True)
  print(json.dumps(result, indent=2))


def main():
  args = _parse()
  if args.repeats is None:
    args.repeats = 1 if args.workload == "longtail" else 3
  if args.workload == "longtail":
    return main_longtail(args)
  engines = args.engines.split(",")
  ckpt = tempfile.mkdtemp(prefix="rollout_bench_")
  n_params = save_random_qwen2(args, ckpt)
  result = {"setting": {"batch": args.batch, "prompt": args.prompt, "new_tokens": args.new_tokens,
                        "params_millions": round(n_params / 1e6, 2), "dtype": "float32", "greedy": True,
                        "cpu_count": os.cpu_count()}}
  from prorl_jax.training.mfu import measure_matmul_flops
  result["matmul_gflops"] = round(measure_matmul_flops() / 1e9, 1)
  tokens = {}
  if "prorl_jax" in engines:
    ours, config, _ = bench_prorl_jax(ckpt, args)
    tokens["prorl_jax"] = ours.pop("tokens")
    # Decode phase: the loop's steps (the first token comes from the prefill) over the loop's own time.
    avg_context = args.prompt + args.new_tokens / 2
    decode_flops = _decode_flops_per_token(config, avg_context) * args.batch * ours["decode_steps"]
    ours["decode_gflops"] = round(decode_flops / ours["decode_s"] / 1e9, 1)
    ours["fraction_of_matmul_flops"] = round(decode_flops / ours["decode_s"] / (result["matmul_gflops"] * 1e9), 3)
    # Whole generate call (prefill + decode + host work) against its wall time, for comparison.
    total_flops = decode_flops + _prefill_flops(config, args.batch, args.prompt)
    ours["generate_gflops"] = round(total_flops / ours["seconds"] / 1e9, 1)
    ours["generate_fraction_of_matmul_flops"] = round(total_flops / ours["seconds"] / (result["matmul_gflops"] * 1e9),
                                                      3)
    result["prorl_jax"] = ours
  if "transformers" in engines:
    theirs = bench_transformers(ckpt, args)
    tokens["transformers"] = theirs.pop("tokens")
    result["transformers"] = theirs
  if args.tunix_python:
    proc = subprocess.run([args.tunix_python, os.path.join(os.path.dirname(__file__), "tunix_sampler.py"), ckpt,
                           json.dumps(vars(args))], capture_output=True, text=True)
    try:
      result["tunix"] = json.loads(proc.stdout.strip().splitlines()[-1])
      tokens["tunix"] = result["tunix"].pop("tokens", None)
    except (IndexError, json.JSONDecodeError):
      result["tunix"] = {"error": proc.stderr[-2000:]}
  if "prorl_jax" in result and "transformers" in result:
    result["speedup_vs_transformers"] = round(result["prorl_jax"]["tokens_per_s"]
                                              / result["transformers"]["tokens_per_s"], 2)
    result["greedy_tokens_identical"] = tokens["prorl_jax"] == tokens["transformers"]
  if "tunix" in tokens and tokens["tunix"] is not None and "prorl_jax" in tokens:
    result["speedup_vs_tunix"] = round(result["prorl_jax"]["tokens_per_s"] / result["tunix"]["tokens_per_s"], 2)
    result["greedy_tokens_identical_tunix"] = tokens["prorl_jax"] == tokens["tunix"]
  result["peak_rss_mib"] = round(peak_rss_mib(), 1)
  for k in ("prorl_jax", "transformers"):
    if k in result:
      for f in ("tokens_per_s", "seconds", "first_call_s", "prefill_s", "decode_s", "decode_ms_per_step"):
        if f in result[k]:
          result[k][f] = round(result[k][f], 3)
  shutil.rmtree(ckpt, ignore_errors=True)  # the checkpoint is ~150 MB at the default size
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  sys.exit(main())
