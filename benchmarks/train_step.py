"""Update-phase throughput: prorl_jax's train step against transformers + torch on the same weights and batch.

One update phase = log-probs of the old policy and of the reference (no grad), then forward/backward of the
ProRLv2 loss (PPO with decoupled clip 0.2/0.28, k2 KL to the reference clamped at ±10, token-mean over the
mini-batch) and one AdamW step after global-norm clipping at 1.0: what `prorl_jax.training` runs per mini-batch.
Tokens/s counts every position of the padded batch (B × (prompt + response)) per update phase, whatever an engine
skips, so all engines are timed on the same work.

Engines (each in its own subprocess, alternating for `--rounds`; peak RSS is per engine; torch uses
`os.cpu_count()` threads), all reading one checkpoint written by transformers and one batch (left-padded prompts,
right-padded responses of random lengths):
  prorl_jax              the trainer's default path: micro-batches of similar-length rows, each cut to the widths
                         its rows use (`prorl_jax.training.micro_batches`), gradients accumulated over them
  transformers           the usual Hugging Face layout: the whole batch padded to the full length
  prorl_jax_padded       like transformers, in JAX (one padded pass)
  transformers_bucketed  the same micro-batches as prorl_jax, in torch
The JSON reports each engine's tokens/s, the speed ratios (headline: prorl_jax / transformers; like for like:
padded / padded and bucketed / bucketed), peak RSS, agreement of prorl_jax's and transformers' log-probs and
gradient norm, and the update-phase MFU (FLOPs of the shapes computed) against a measured matmul.

  python -m benchmarks.train_step                   # 21.7M-param Qwen2, 16 sequences of 64 + 192 tokens
  python -m benchmarks.train_step --engines=prorl_jax,transformers --micro=4
  python -m benchmarks.train_step --devices=2       # JAX: rows split over 2 CPU devices (a data mesh)
  python -m benchmarks.train_step --hidden=512 --layers=8 --intermediate=1408 --batch=16   # ~57M params
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

import numpy as np

from benchmarks.common import add_model_flags, current_rss_mib, peak_rss_mib, save_random_qwen2


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  add_model_flags(p, hidden=384, intermediate=1024, layers=6, heads=6)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--prompt", type=int, default=64)
  p.add_argument("--response", type=int, default=192)
  p.add_argument("--chunk", type=int, default=1024, help="tokens per LM-head chunk (JAX)")
  p.add_argument("--micro", type=int, default=2,
                 help="rows per micro-batch of the bucketed engines (0 = whole batch); the padded ones take all rows")
  p.add_argument("--buckets", type=int, default=4,
                 help="JAX: length buckets per octave for micro-batches of similar-length rows cut to their widths, "
                      "as the trainer's batch.length_buckets_per_octave (0 = every row padded to the full length)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--rounds", type=int, default=2,
                 help="engines run alternately this many times (fresh processes); each engine's best step counts, "
                      "so a noisy neighbour on a shared machine hurts both alike")
  p.add_argument("--devices", type=int, default=1, help="JAX CPU devices the rows are split over (data mesh)")
  p.add_argument("--engines", default="prorl_jax,transformers,prorl_jax_padded,transformers_bucketed",
                 help="prorl_jax: the trainer's path (bucketed micro-batches); prorl_jax_padded: one padded pass; "
                      "transformers: one padded pass (the usual HF layout); transformers_bucketed: the same "
                      "micro-batches as prorl_jax")
  p.add_argument("--lr", type=float, default=1e-4, help="large enough that step 2 log-probs visibly move")
  p.add_argument("--threads", type=int, default=os.cpu_count())
  p.add_argument("--worker", default="", help=argparse.SUPPRESS)
  p.add_argument("--dir", default="", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def make_batch(args) -> dict[str, np.ndarray]:
  """Left-padded prompts and right-padded responses of random lengths, random advantages (fixed seed)."""
  rng = np.random.RandomState(0)
  b, p, r = args.batch, args.prompt, args.response
  prompt_lens = rng.randint(p // 2, p + 1, size=b)
  resp_lens = rng.randint(r // 4, r + 1, size=b)
  cols = np.arange(p + r)[None]
  mask = (cols >= p - prompt_lens[:, None]) & (cols < p + resp_lens[:, None])
  ids = np.where(mask, rng.randint(3, args.vocab, size=(b, p + r)), 0).astype(np.int32)
  resp_mask = (np.arange(r)[None] < resp_lens[:, None]).astype(np.float32)
  adv = (rng.normal(size=(b, r)) * resp_mask).astype(np.float32)
  return dict(input_ids=ids, attention_mask=mask, response_mask=resp_mask, advantages=adv)


def _timed(step, repeats):
  """(first call seconds, [wall seconds], [process CPU seconds], outputs) of `repeats` calls after a first one."""
  start = time.perf_counter()
  first = step()
  first_s = time.perf_counter() - start
  times, cpu, outs = [], [], [first]
  for _ in range(repeats):
    start, cpu0 = time.perf_counter(), time.process_time()
    outs.append(step())
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - cpu0)
  return first_s, times, cpu, outs


def worker_jax(args) -> dict:
  import jax
  import jax.numpy as jnp

  from prorl_jax import models, parallel
  from prorl_jax.training import config as config_lib
  from prorl_jax.training import micro_batches, mfu, update
  from prorl_jax.training.state import create_train_state, make_optimizer

  base_rss = current_rss_mib()
  data = dict(np.load(os.path.join(args.dir, "batch.npz")))
  config, params = models.load_hf(os.path.join(args.dir, "ckpt"))
  run = config_lib.default_config()
  run.optimizer.lr = args.lr
  optimizer = make_optimizer(run.optimizer)
  settings = update.LossSettings.from_config(run, prompt_len=args.prompt)
  micro = args.micro if args.worker == "prorl_jax" else 0  # prorl_jax_padded: one padded pass, as before bucketing
  settings = update.LossSettings(**dict(vars(settings), chunk_size=args.chunk))
  state = create_train_state(params, optimizer, seed=0)
  del params
  arrays = {k: data[k] for k in ("input_ids", "attention_mask", "response_mask", "advantages")}
  # Rows split over a data mesh (params replicated): one XLA program per CPU device, run side by side.
  mesh = parallel.make_mesh(dict(data=args.devices, fsdp=1, tensor=1), devices=jax.devices()[:args.devices])
  state_sharding = parallel.train_state_shardings(config, state, optimizer, mesh)
  batch_sharding = parallel.rows_shardings(
      update.TrainBatch(**arrays, old_logp=data["advantages"], ref_logp=data["advantages"]), mesh)
  state = jax.device_put(state, state_sharding)
  arrays = {k: jax.device_put(v, getattr(batch_sharding, k)) for k, v in arrays.items()}
  fns = update.build_step_functions(config, settings, optimizer, mesh=mesh, state_sharding=state_sharding)
  holder = {"state": state}
  del state
  if args.buckets and args.worker == "prorl_jax":
    with open(os.path.join(args.dir, "plan.json")) as f:
      plan = [micro_batches.MicroBatch(np.asarray(rows, np.int32), pw, rw) for rows, pw, rw in json.load(f)]
  else:  # equal full-width micro-batches (one for the padded worker: a single pass, as before bucketing)
    plan = micro_batches.equal_plan(args.batch, micro, args.prompt, args.response)

  def step():
    st = holder["state"]
    old = fns.logprobs(st.params, arrays["input_ids"], arrays["attention_mask"], plan)
    ref = fns.logprobs(st.ref_params, arrays["input_ids"], arrays["attention_mask"], plan)
    holder["state"], metrics = fns.update(st, update.TrainBatch(**arrays, old_logp=old, ref_logp=ref), plan)
    return jax.device_get((metrics["grad_norm"], metrics["loss"], old))

  first_s, times, cpu, outs = _timed(step, args.repeats)
  peak, source = mfu.peak_flops(dtype=jnp.float32)  # measured on this machine when no table entry
  return dict(seconds=times, cpu_seconds=cpu, first_call_s=first_s, devices=args.devices,
              grad_norm=float(outs[0][0]), loss=float(outs[0][1]), logp_step1=np.asarray(outs[0][2]).tolist(),
              logp_step2=np.asarray(outs[1][2]).tolist(), peak_rss_mib=peak_rss_mib(), base_rss_mib=base_rss,
              peak_flops=peak, peak_source=source,
              # FLOPs of the shapes actually computed (bucketed widths, or the full padded layout).
              update_flops=sum(len(mb.rows) * mfu.update_flops_per_sequence(config, mb.prompt_width,
                                                                            mb.response_width) for mb in plan))


def worker_torch(args) -> dict:
  import copy

  import torch
  import transformers

  torch.set_num_threads(args.threads)
  base_rss = current_rss_mib()
  data = {k: torch.from_numpy(v) for k, v in np.load(os.path.join(args.dir, "batch.npz")).items()}
  model = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(args.dir, "ckpt"), dtype=torch.float32,
                                                            attn_implementation="sdpa")
  ref = copy.deepcopy(model).eval().requires_grad_(False)
  run_opt = dict(lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
  opt = torch.optim.AdamW(model.parameters(), **run_opt)
  ids, mask = data["input_ids"].long(), data["attention_mask"].long()
  p, r = args.prompt, args.response
  resp_mask, adv = data["response_mask"], data["advantages"]
  # The same micro-batches as the JAX engine (rows, prompt and response widths), or the whole padded batch.
  plan = [(np.arange(len(ids)), p, r)]
  if args.worker == "transformers_bucketed":
    with open(os.path.join(args.dir, "plan.json")) as f:
      plan = [(np.asarray(rows), pw, rw) for rows, pw, rw in json.load(f)]

  def logprobs(m, rows, pw, rw):
    sub_ids, sub_mask = ids[rows][:, p - pw:p + rw], mask[rows][:, p - pw:p + rw]
    positions = (sub_mask.cumsum(-1) - 1).clamp(min=0)
    logits = m(input_ids=sub_ids, attention_mask=sub_mask, position_ids=positions,
               logits_to_keep=rw + 1).logits[:, :-1]
    # TRL's selective_log_softmax: one row's logsumexp at a time instead of a full [B, R, V] log_softmax.
    picked = torch.gather(logits, -1, sub_ids[:, pw:, None])[..., 0]
    return picked - torch.stack([torch.logsumexp(row, dim=-1) for row in logits])

  def step():
    old, ref_lp = torch.zeros_like(adv), torch.zeros_like(adv)
    with torch.no_grad():
      for rows, pw, rw in plan:
        old[rows, :rw] = logprobs(model, rows, pw, rw)
        ref_lp[rows, :rw] = logprobs(ref, rows, pw, rw)
    tokens = resp_mask.sum().clamp(min=1)  # the whole batch's count: micro-batch losses sum to the batch loss
    total = 0.0
    for rows, pw, rw in plan:
      logp = logprobs(model, rows, pw, rw)
      m, a = resp_mask[rows, :rw], adv[rows, :rw]
      ratio = torch.exp(torch.clamp(logp - old[rows, :rw], -20, 20))
      pg = torch.maximum(-a * ratio, -a * torch.clamp(ratio, 1 - 0.2, 1 + 0.28))
      d = torch.clamp(logp - ref_lp[rows, :rw], -10, 10)
      loss = (pg * m).sum() / tokens + 1e-4 * (0.5 * d * d * m).sum() / tokens
      loss.backward()
      total += float(loss)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(grad_norm), total, old.numpy().copy()

  first_s, times, cpu, outs = _timed(step, args.repeats)
  return dict(seconds=times, cpu_seconds=cpu, first_call_s=first_s, threads=torch.get_num_threads(),
              grad_norm=outs[0][0], loss=outs[0][1], logp_step1=outs[0][2].tolist(), logp_step2=outs[1][2].tolist(),
              peak_rss_mib=peak_rss_mib(), base_rss_mib=base_rss)


def _run_worker(engine: str, args, workdir: str) -> dict:
  env = dict(os.environ)
  if engine.startswith("prorl_jax"):
    env["JAX_PLATFORMS"] = env.get("JAX_PLATFORMS", "cpu")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    if args.devices > 1:
      flags.append(f"--xla_force_host_platform_device_count={args.devices}")
    env["XLA_FLAGS"] = " ".join(flags)
  argv = [sys.executable, "-m", "benchmarks.train_step", f"--worker={engine}", f"--dir={workdir}"]
  argv += [f"--{k}={v}" for k, v in vars(args).items() if k not in ("worker", "dir", "engines", "rounds")]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True)
  try:
    return json.loads(proc.stdout.strip().splitlines()[-1])
  except (IndexError, json.JSONDecodeError):
    return {"error": proc.stderr[-3000:]}


def main(argv=None):
  args = _parse(argv)
  if args.worker:
    out = worker_jax(args) if args.worker.startswith("prorl_jax") else worker_torch(args)
    print(json.dumps(out))
    return 0
  workdir = tempfile.mkdtemp(prefix="train_step_bench_")
  n_params = save_random_qwen2(args, os.path.join(workdir, "ckpt"))
  batch = make_batch(args)
  np.savez(os.path.join(workdir, "batch.npz"), **batch)
  from prorl_jax.training import micro_batches  # numpy only: the plan both bucketed engines run
  plan = micro_batches.plan_micro_batches(batch["attention_mask"], batch["response_mask"], args.prompt, args.micro,
                                          args.buckets or 0)
  with open(os.path.join(workdir, "plan.json"), "w") as f:
    json.dump([(mb.rows.tolist(), mb.prompt_width, mb.response_width) for mb in plan], f)
  padding = micro_batches.padded_fraction(plan, batch["attention_mask"])
  tokens = args.batch * (args.prompt + args.response)
  result = {"setting": {"params_millions": round(n_params / 1e6, 2), "batch": args.batch, "prompt": args.prompt,
                        "response": args.response, "tokens_per_step": tokens,
                        "response_tokens": int(batch["response_mask"].sum()), "dtype": "float32",
                        "cpu_count": os.cpu_count(), "jax_devices": args.devices, "chunk": args.chunk,
                        "micro_batch": args.micro, "buckets_per_octave": args.buckets,
                        "padding_fraction": round(padding[0], 3), "padding_fraction_bucketed": round(padding[1], 3),
                        "micro_batch_widths": [(mb.prompt_width, mb.response_width) for mb in plan]}}
  outs, runs = {}, {}
  engines = args.engines.split(",")
  for _ in range(args.rounds):
    for engine in engines:
      runs.setdefault(engine, []).append(_run_worker(engine, args, workdir))
  for engine in engines:
    ok = [o for o in runs[engine] if "error" not in o]
    if not ok:
      result[engine] = runs[engine][0]
      continue
    out = min(ok, key=lambda o: min(o["seconds"]))
    out["peak_rss_mib"] = max(o["peak_rss_mib"] for o in ok)
    outs[engine] = out
    best = min(out["seconds"])
    step_cpu = min(c for o in ok for c in o["cpu_seconds"])
    result[engine] = {"tokens_per_s": round(tokens / best, 1), "step_s": round(best, 3),
                      "tokens_per_cpu_s": round(tokens / step_cpu, 1), "step_cpu_s": round(step_cpu, 3),
                      "step_s_median": round(float(np.median(out["seconds"])), 3),
                      "first_call_s": round(out["first_call_s"], 2), "peak_rss_mib": round(out["peak_rss_mib"]),
                      "rss_growth_mib": round(out["peak_rss_mib"] - out["base_rss_mib"]),
                      "grad_norm_step1": out["grad_norm"],
                      "best_step_s_per_round": [round(min(o["seconds"]), 3) for o in ok]}
    if engine.startswith("prorl_jax"):
      achieved = out["update_flops"] / best
      result[engine].update(update_gflops=round(achieved / 1e9, 1),
                            mfu=round(achieved / out["peak_flops"], 3), peak_gflops=round(out["peak_flops"] / 1e9, 1),
                            peak_source=out["peak_source"])
  result["load_average"] = os.getloadavg()
  def ratio(a, b, field="tokens_per_s"):
    if a in outs and b in outs:
      return round(result[a][field] / result[b][field], 2)
    return None

  result["speedup_vs_transformers"] = ratio("prorl_jax", "transformers")
  result["cpu_efficiency_vs_transformers"] = ratio("prorl_jax", "transformers", "tokens_per_cpu_s")
  result["memory_ratio_vs_transformers"] = ratio("prorl_jax", "transformers", "peak_rss_mib")
  # Like for like: both padded, and both running the same length-bucketed micro-batches.
  result["speedup_padded_vs_transformers_padded"] = ratio("prorl_jax_padded", "transformers")
  result["speedup_vs_transformers_bucketed"] = ratio("prorl_jax", "transformers_bucketed")
  result["memory_ratio_vs_transformers_bucketed"] = ratio("prorl_jax", "transformers_bucketed", "peak_rss_mib")
  if "prorl_jax" in outs and "transformers" in outs:
    a, b = outs["prorl_jax"], outs["transformers"]
    m = batch["response_mask"] > 0
    result["agreement"] = {
        "logp_step1_max_abs_diff": float(np.abs(np.asarray(a["logp_step1"]) - b["logp_step1"])[m].max()),
        "logp_step2_max_abs_diff": float(np.abs(np.asarray(a["logp_step2"]) - b["logp_step2"])[m].max()),
        "grad_norm_rel_diff": abs(a["grad_norm"] - b["grad_norm"]) / max(abs(b["grad_norm"]), 1e-12),
        # How far one AdamW step moved the log-probs: the step-2 agreement is meaningful only if this is larger.
        "logp_step_change_max": float(np.abs(np.asarray(b["logp_step2"]) - b["logp_step1"])[m].max())}
  shutil.rmtree(workdir, ignore_errors=True)  # the checkpoint is ~150 MB at the default size
  print(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
