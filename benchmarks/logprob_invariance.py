"""How invariant the training log-probs are, and where float32 rounding still differs, as one JSON.

For one batch of ragged rows (left-padded prompts, right-padded responses) and a random Qwen2 in float32:
  composition   max |Δ log p| of the same rows in micro-batches of 1, 2, 4 rows, in reversed order, against one
                micro-batch of all rows (the same width)
  width         ... with rows trimmed to their length bucket (`micro_batches.plan_micro_batches`)
  mesh          ... on a data x fsdp mesh and on a mesh with a tensor-parallel split (8 simulated CPU devices)
  programs      the first update's `ppo_kl` with old log-probs from the log-prob pass: as they are, and with
                `on_policy=True` (the current log-probs, detached: the ratio is exactly 1)
  xla_dot       for `[M, K] x [K, N]` dots, the M and N at which XLA:CPU's per-element results differ from those of
                the same rows / columns in a larger dot: it picks its kernels by shape, which is why a trimmed
                width (attention dots over fewer positions) rounds differently

  python -m benchmarks.logprob_invariance
  python -m benchmarks.logprob_invariance --hidden=128 --layers=4 --rows=32
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from prorl_jax import models, parallel  # noqa: E402
from prorl_jax.training import micro_batches, update  # noqa: E402
from prorl_jax.training import state as state_lib  # noqa: E402


def _step_functions(model_config, settings, optimizer, mesh):
  state = jax.eval_shape(lambda: state_lib.create_train_state(
      models.init_params(model_config, jax.random.key(0)), optimizer, seed=0))
  return update.build_step_functions(model_config, settings, optimizer, mesh=mesh,
                                     state_sharding=parallel.train_state_shardings(model_config, state, optimizer,
                                                                                   mesh))


def _batch(args, config, rng):
  p, r = args.prompt, args.response
  prompt_lens = rng.randint(1, p + 1, size=args.rows)
  resp_lens = rng.randint(1, r + 1, size=args.rows)
  resp_lens[: args.rows // 3] = rng.randint(1, max(r // 4, 2), size=args.rows // 3)  # a cluster of short ones
  cols = np.arange(p + r)[None]
  mask = (cols >= p - prompt_lens[:, None]) & (cols < p + resp_lens[:, None])
  resp_mask = (np.arange(r)[None] < resp_lens[:, None]).astype(np.float32)
  ids = np.where(mask, rng.randint(2, config.vocab_size, size=mask.shape), 0).astype(np.int32)
  return ids, mask, resp_mask


def _max_diff(a, b, m) -> float:
  return float(np.max(np.abs(np.asarray(a)[m] - np.asarray(b)[m])))


def _dot_variance(k: int, n: int, rng) -> dict[str, list[int]]:
  x = rng.randn(1024, k).astype(np.float32)
  w = rng.randn(k, n).astype(np.float32)
  dot = jax.jit(jnp.dot)
  ref = np.asarray(dot(x, w))
  ms = [m for m in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if not np.array_equal(np.asarray(dot(x[:m], w)), ref[:m])]
  ns = [c for c in (1, 4, 8, 16, 20, 33, 64) if c < n and
        not np.array_equal(np.asarray(dot(x[:256], w[:, :c])), ref[:256, :c])]
  return {"rows_differ_at_M": ms, "columns_differ_at_N": ns}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--hidden", type=int, default=64)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--rows", type=int, default=16)
  p.add_argument("--prompt", type=int, default=20)
  p.add_argument("--response", type=int, default=48)
  args = p.parse_args()
  t0 = time.perf_counter()
  config = models.Qwen2Config(vocab_size=128, hidden_size=args.hidden, intermediate_size=args.hidden * 3 // 2,
                              num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                              initializer_range=0.2)
  params = jax.device_get(models.init_params(config, jax.random.key(0)))
  optimizer = state_lib.make_optimizer(ml_collections.ConfigDict(dict(
      lr=1e-3, warmup_steps=0, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6, grad_clip=1.0)))
  settings = update.LossSettings(prompt_len=args.prompt, kl_coef=0.0, chunk_size=7)
  one_device = parallel.make_mesh(dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
  fns = _step_functions(config, settings, optimizer, one_device)
  rng = np.random.RandomState(0)
  ids, mask, resp_mask = _batch(args, config, rng)
  m = resp_mask > 0
  rows, prompt, response = args.rows, args.prompt, args.response
  full = fns.logprobs(params, ids, mask, micro_batches.equal_plan(rows, rows, prompt, response))

  composition = {}
  for micro in (1, 2, 4):
    composition[f"micro_{micro}"] = _max_diff(fns.logprobs(params, ids, mask, micro_batches.equal_plan(
        rows, micro, prompt, response)), full, m)
  rev = np.arange(rows, dtype=np.int32)[::-1]
  composition["reversed_pairs"] = _max_diff(fns.logprobs(params, ids, mask, [
      micro_batches.MicroBatch(rev[i:i + 2], prompt, response) for i in range(0, rows, 2)]), full, m)

  bucketed = micro_batches.plan_micro_batches(mask, resp_mask, prompt, 4, per_octave=4)
  width = {"bucketed_micro_4": _max_diff(fns.logprobs(params, ids, mask, bucketed), full, m),
           "widths": sorted({(mb.prompt_width, mb.response_width) for mb in bucketed})}

  mesh_diffs = {}
  for name, sizes in (("data2_fsdp4", dict(data=2, fsdp=4, tensor=1)), ("data2_fsdp2_tensor2",
                                                                        dict(data=2, fsdp=2, tensor=2))):
    mesh = parallel.make_mesh(sizes)
    sharded_fns = _step_functions(config, settings, optimizer, mesh)
    state = state_lib.create_train_state(params, optimizer, seed=0)
    shardings = parallel.train_state_shardings(config, state, optimizer, mesh)
    placed = jax.device_put(dict(ids=ids, mask=mask), parallel.rows_shardings(dict(ids=ids, mask=mask), mesh))
    got = sharded_fns.logprobs(jax.device_put(params, shardings.params), placed["ids"], placed["mask"])
    mesh_diffs[name] = _max_diff(got, full, m)

  plan = micro_batches.equal_plan(rows, rows // 2, prompt, response)
  old = fns.logprobs(params, ids, mask, plan)
  batch = update.TrainBatch(input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                            response_mask=jnp.asarray(resp_mask), advantages=jnp.asarray(
                                rng.normal(size=resp_mask.shape).astype(np.float32) * resp_mask),
                            old_logp=old, ref_logp=old)
  programs = {}
  for name, on_policy in (("old_logp_from_logprob_pass", False), ("on_policy", True)):
    _, metrics = fns.update(state_lib.create_train_state(params, optimizer, seed=0), batch, plan,
                            on_policy=on_policy)
    programs[name] = {k: float(metrics[k]) for k in ("ppo_kl", "pg_clipfrac")}

  dots = {f"K{k}_N{n}": _dot_variance(k, n, rng) for k, n in ((16, 68), (64, 96), (1536, 256))}
  print(json.dumps({"backend": jax.default_backend(), "jax": jax.__version__, "rows": rows,
                    "prompt": prompt, "response": response, "hidden": args.hidden, "layers": args.layers,
                    "max_abs_logp_diff": {"composition": composition, "width": width, "mesh": mesh_diffs},
                    "first_update": programs, "xla_dot": dots,
                    "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
  main()
