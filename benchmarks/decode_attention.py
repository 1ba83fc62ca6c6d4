"""Benchmark: the ragged decode-attention kernel against the dense XLA reference; prints JSON.

On a GPU (or TPU) it times `decode_attention(impl="pallas")` and `decode_attention_reference` at 8k-32k cache
lengths for dense, uniformly ragged, long-tail and half-finished batches, and reports for each: kernel and reference
time (µs), the KV bytes each must read, achieved bandwidth (GB/s), its fraction of the device's peak HBM bandwidth
(from a table of known devices) and of a copy bandwidth measured in the same run, and the speed-up over dense
attention. With `--smoke` it runs tiny shapes on CPU in Pallas interpret mode (both kernels) to prove the script
works; CPU timings are meaningless for the kernels.

  python benchmarks/decode_attention.py                  # accelerator, defaults below
  python benchmarks/decode_attention.py --smoke          # CPU, seconds
  python benchmarks/decode_attention.py --cache-lens 8192,32768 --batch-sizes 64 --heads 12:2:128 --out r.json
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from kernels import decode_attention, decode_attention_reference, select_impl

# Peak HBM bandwidth in GB/s, matched against `device_kind` (first match wins, so specific names come first).
PEAK_GBPS = (
    ("H100 PCIe", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),  # SXM5 80GB HBM3
    ("GH200", 4000.0),
    ("H200", 4800.0),
    ("B200", 8000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),  # 40GB
    ("L40S", 864.0),
    ("L4", 300.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("RTX 4090", 1008.0),
    ("TPU v5 lite", 819.0),
    ("TPU v5e", 819.0),
    ("TPU v5p", 2765.0),
    ("TPU v5", 2765.0),
    ("TPU v6 lite", 1640.0),
    ("TPU v6e", 1640.0),
    ("TPU v4", 1200.0),
)
DISTRIBUTIONS = ("dense", "uniform", "longtail", "half_finished")


def peak_gbps(device_kind: str) -> float | None:
  for name, gbps in PEAK_GBPS:
    if name.lower() in device_kind.lower():
      return gbps
  return None


def row_lengths(kind: str, batch: int, max_len: int, rng: np.random.Generator) -> np.ndarray:
  """int32 `[batch]` lengths in `[0, max_len]` for a named distribution."""
  if kind == "dense":
    return np.full(batch, max_len, np.int32)
  if kind == "uniform":
    return rng.integers(1, max_len + 1, batch).astype(np.int32)
  if kind == "longtail":
    # Most rows short (prompt plus a short answer), one in eight runs to the full budget.
    lengths = rng.integers(1, max(2, max_len // 16), batch)
    lengths[rng.permutation(batch)[:max(1, batch // 8)]] = max_len
    return lengths.astype(np.int32)
  if kind == "half_finished":
    return np.where(np.arange(batch) % 2 == 0, max_len, 0).astype(np.int32)
  raise ValueError(f"unknown distribution {kind!r}; pick from {DISTRIBUTIONS}")


def time_us(fn, *args, iters: int, reps: int) -> float:
  """Median over `reps` of the mean time of `iters` back-to-back calls (async dispatch overlaps host overhead)."""
  jax.block_until_ready(fn(*args))
  samples = []
  for _ in range(reps):
    start = time.perf_counter()
    for _ in range(iters):
      out = fn(*args)
    jax.block_until_ready(out)
    samples.append((time.perf_counter() - start) / iters * 1e6)
  return float(np.median(samples))


def copy_gbps(num_bytes: int, iters: int, reps: int) -> float:
  """Read+write bandwidth of an elementwise op over a `num_bytes` bf16 buffer."""
  x = jnp.ones((num_bytes // 2,), jnp.bfloat16)
  us = time_us(jax.jit(lambda a: a + 1), x, iters=iters, reps=reps)
  return 2 * num_bytes / us / 1e3


@functools.lru_cache(maxsize=None)
def jitted(impl: str, interpret: bool | None):
  """One jitted function per implementation, so distributions of the same shapes share a compilation."""
  if impl == "reference":
    return jax.jit(decode_attention_reference)
  return jax.jit(functools.partial(decode_attention, impl=impl, interpret=interpret))


def bench_case(*, batch, max_len, heads, dtype, distribution, impl, interpret, iters, reps, rng):
  num_q_heads, num_kv_heads, head_dim = heads
  q = jnp.asarray(rng.standard_normal((batch, num_q_heads, head_dim)), dtype)
  k = jnp.asarray(rng.standard_normal((batch, max_len, num_kv_heads, head_dim)), dtype)
  v = jnp.asarray(rng.standard_normal((batch, max_len, num_kv_heads, head_dim)), dtype)
  lengths_np = row_lengths(distribution, batch, max_len, rng)
  lengths = jnp.asarray(lengths_np)
  choice = select_impl(q, k, dtype, impl=impl, interpret=interpret)
  kernel, reference = jitted(impl, interpret), jitted("reference", None)
  max_err = float(jnp.max(jnp.abs(kernel(q, k, v, lengths).astype(jnp.float32)
                                  - reference(q, k, v, lengths).astype(jnp.float32))))
  kernel_us = time_us(kernel, q, k, v, lengths, iters=iters, reps=reps)
  reference_us = time_us(reference, q, k, v, lengths, iters=iters, reps=reps)
  itemsize = jnp.dtype(dtype).itemsize
  per_token = 2 * num_kv_heads * head_dim * itemsize  # K and V of one position
  io_bytes = 2 * q.size * itemsize  # q in, output out
  kernel_bytes = int(lengths_np.sum()) * per_token + io_bytes
  dense_bytes = batch * max_len * per_token + io_bytes
  return dict(
      cache_len=max_len, batch=batch, num_q_heads=num_q_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
      dtype=jnp.dtype(dtype).name, distribution=distribution, mean_length=float(lengths_np.mean()),
      kernel=choice.name, block_k=choice.block_k, num_splits=choice.num_splits, interpret=choice.interpret,
      kernel_us=kernel_us, reference_us=reference_us, speedup_vs_reference=reference_us / kernel_us,
      kernel_bytes=kernel_bytes, reference_bytes=dense_bytes,
      kernel_gbps=kernel_bytes / kernel_us / 1e3, reference_gbps=dense_bytes / reference_us / 1e3,
      max_abs_diff_vs_reference=max_err)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true", help="tiny shapes in interpret mode (CPU)")
  parser.add_argument("--cache-lens", default="8192,16384,32768")
  parser.add_argument("--batch-sizes", default="16,64,256")
  parser.add_argument("--heads", default="12:2:128,14:2:64",
                      help="comma-separated num_q_heads:num_kv_heads:head_dim (Qwen2.5-1.5B and -0.5B)")
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--distributions", default=",".join(DISTRIBUTIONS))
  parser.add_argument("--iters", type=int, default=20)
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--copy-mib", type=int, default=1024, help="buffer size for the copy-bandwidth probe")
  parser.add_argument("--out", default=None, help="also write the JSON here")
  args = parser.parse_args(argv)

  device = jax.devices()[0]
  if args.smoke:
    cache_lens, batch_sizes, heads_list = [72, 130], [3], [(4, 2, 16), (12, 2, 64)]
    dtype, iters, reps, copy_bytes = "float32", 2, 1, 16 << 20
    impls = [("pallas_triton", True), ("pallas_mosaic_tpu", True)]
  else:
    if device.platform == "cpu":
      parser.error("no accelerator found: run with --smoke on CPU")
    cache_lens = [int(x) for x in args.cache_lens.split(",")]
    batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    heads_list = [tuple(int(y) for y in x.split(":")) for x in args.heads.split(",")]
    dtype, iters, reps, copy_bytes = args.dtype, args.iters, args.reps, args.copy_mib << 20
    impls = [("pallas", None)]

  peak = peak_gbps(device.device_kind)
  measured_copy = copy_gbps(copy_bytes, iters, reps)
  rng = np.random.default_rng(0)
  results = []
  for impl, interpret in impls:
    for heads in heads_list:
      for max_len in cache_lens:
        for batch in batch_sizes:
          for distribution in args.distributions.split(","):
            row = bench_case(batch=batch, max_len=max_len, heads=heads, dtype=dtype, distribution=distribution,
                             impl=impl, interpret=interpret, iters=iters, reps=reps, rng=rng)
            row["kernel_fraction_of_peak"] = row["kernel_gbps"] / peak if peak else None
            row["reference_fraction_of_peak"] = row["reference_gbps"] / peak if peak else None
            row["kernel_fraction_of_copy"] = row["kernel_gbps"] / measured_copy
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
  report = dict(device=device.device_kind, platform=device.platform, jax=jax.__version__, smoke=args.smoke,
                peak_gbps=peak, measured_copy_gbps=measured_copy, copy_buffer_bytes=copy_bytes, results=results)
  text = json.dumps(report, indent=1)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text)
  return report


if __name__ == "__main__":
  main()
