"""Tests for kernels/decode_attention*: numerics (Pallas interpret mode vs a float64 numpy oracle), dispatch,
work skipping, and lowering for GPU (Triton) and TPU (Mosaic) on a CPU-only machine."""

import functools
import logging
import re

import chex
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import decode_attention, decode_attention_reference, sampler_kernel_cases, select_impl
from kernels.decode_attention import combine_splits
from kernels.decode_attention_select import PALLAS_MOSAIC_TPU, PALLAS_TRITON, REFERENCE
from kernels.decode_attention_tpu import decode_partials_tpu, kv_block_index, previous_live_row
from kernels.decode_attention_triton import decode_partials_triton, split_block_count

KERNELS = (PALLAS_TRITON, PALLAS_MOSAIC_TPU)
TOL = {"float32": dict(atol=1e-5, rtol=1e-5), "bfloat16": dict(atol=1e-2, rtol=1e-2)}


@pytest.fixture(autouse=True)
def _x64_off():
  if jax.config.jax_enable_x64:
    pytest.skip("Pallas interpret mode works only in 32-bit")


def oracle(q, k, v, lengths, sm_scale=None):
  """float64 numpy decode attention written from the formula, one (row, query head) at a time."""
  q, k, v = (np.asarray(jnp.asarray(x, jnp.float32), np.float64) for x in (q, k, v))
  batch, num_q_heads, head_dim = q.shape
  max_len, num_kv_heads = k.shape[1], k.shape[2]
  group = num_q_heads // num_kv_heads
  scale = head_dim ** -0.5 if sm_scale is None else sm_scale
  out = np.zeros_like(q)
  for b in range(batch):
    n = int(np.clip(lengths[b], 0, max_len))
    for h in range(num_q_heads):
      if n == 0:
        continue
      logits = k[b, :n, h // group] @ q[b, h] * scale
      p = np.exp(logits - logits.max())
      out[b, h] = (p / p.sum()) @ v[b, :n, h // group]
  return out


def make_inputs(batch, max_len, num_q_heads, num_kv_heads, head_dim, dtype, seed=0):
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.standard_normal((batch, num_q_heads, head_dim)), dtype)
  k = jnp.asarray(rng.standard_normal((batch, max_len, num_kv_heads, head_dim)), dtype)
  v = jnp.asarray(rng.standard_normal((batch, max_len, num_kv_heads, head_dim)), dtype)
  return q, k, v


def assert_close(got, want, dtype):
  chex.assert_tree_all_finite(got)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, **TOL[dtype])


# ---------------------------------------------------------------------------------------------------- numerics


# Each GQA ratio and head dim meets both dtypes; the slow sweep runs the full product.
PAIRWISE = [(1, 64, "float32"), (1, 128, "bfloat16"), (2, 64, "bfloat16"), (2, 128, "float32"),
            (6, 64, "float32"), (6, 128, "bfloat16")]
FULL = [(g, d, t) for g in (1, 2, 6) for d in (64, 128) for t in ("float32", "bfloat16")]


@pytest.mark.parametrize("group,head_dim,dtype,use_jit", [(*c, True) for c in FULL] + [
    (6, 64, "float32", False), (2, 128, "bfloat16", False)])
def test_reference_matches_oracle(group, head_dim, dtype, use_jit):
  q, k, v = make_inputs(5, 40, 2 * group, 2, head_dim, dtype)
  lengths = jnp.array([1, 40, 23, 0, 57], jnp.int32)  # 57 > max_len: clamped to a full cache.
  fn = jax.jit(decode_attention_reference) if use_jit else decode_attention_reference
  out = fn(q, k, v, lengths)
  chex.assert_shape(out, q.shape)
  assert out.dtype == q.dtype
  assert_close(out, oracle(q, k, v, lengths), dtype)


def _check_kernel(kernel, group, head_dim, dtype):
  """Lengths 1, full, not a block multiple, 0 and past max_len; max_len 40 is not a multiple of block_k 16, and 2
  splits exercise the merge."""
  q, k, v = make_inputs(5, 40, 2 * group, 2, head_dim, dtype)
  lengths = jnp.array([1, 40, 23, 0, 57], jnp.int32)
  fn = jax.jit(functools.partial(decode_attention, impl=kernel, block_k=16, num_splits=2))
  out = fn(q, k, v, lengths)
  chex.assert_shape(out, q.shape)
  assert out.dtype == q.dtype
  assert_close(out, oracle(q, k, v, lengths), dtype)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("group,head_dim,dtype", PAIRWISE)
def test_kernel_matches_oracle(kernel, group, head_dim, dtype):
  _check_kernel(kernel, group, head_dim, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("group,head_dim,dtype", [c for c in FULL if c not in PAIRWISE])
def test_kernel_matches_oracle_rest_of_product(kernel, group, head_dim, dtype):
  _check_kernel(kernel, group, head_dim, dtype)


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_without_jit_and_default_blocks(kernel):
  q, k, v = make_inputs(3, 40, 4, 2, 64, "float32", seed=1)
  lengths = jnp.array([17, 0, 40], jnp.int32)
  out = decode_attention(q, k, v, lengths, impl=kernel, sm_scale=0.3)
  assert_close(out, oracle(q, k, v, lengths, sm_scale=0.3), "float32")


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_ignores_garbage_past_length(kernel):
  """NaN in every cache slot at or past a row's length (a finished row included) must not reach the output."""
  q, k, v = make_inputs(4, 40, 6, 2, 64, "float32", seed=2)
  lengths = jnp.array([5, 0, 33, 16], jnp.int32)
  past = jnp.arange(40)[None, :, None, None] >= lengths[:, None, None, None]
  k_bad, v_bad = jnp.where(past, jnp.nan, k), jnp.where(past, jnp.nan, v)
  out = jax.jit(functools.partial(decode_attention, impl=kernel, block_k=16, num_splits=2))(q, k_bad, v_bad,
                                                                                              lengths)
  assert_close(out, oracle(q, k, v, lengths), "float32")
  np.testing.assert_array_equal(np.asarray(out[1]), 0.0)


@pytest.mark.parametrize("impl", ["reference", "pallas"])
def test_inside_while_loop(impl):
  """The sampler's pattern: static shapes, lengths carried (traced) through a `lax.while_loop`."""
  q, k, v = make_inputs(3, 24, 4, 2, 32, "float32", seed=3)
  start = jnp.array([0, 3, 10], jnp.int32)

  @jax.jit
  def run(q, k, v, start):
    def body(carry):
      step, lengths, total = carry
      out = decode_attention(q, k, v, lengths, impl=impl, block_k=16)
      return step + 1, jnp.minimum(lengths + 5, 24), total + out

    return lax.while_loop(lambda c: c[0] < 4, body, (0, start, jnp.zeros_like(q)))[2]

  want = sum(oracle(q, k, v, np.minimum(np.asarray(start) + 5 * i, 24)) for i in range(4))
  assert_close(run(q, k, v, start), want, "float32")


def test_mixed_dtypes_output_in_q_dtype():
  q, k, v = make_inputs(2, 32, 4, 2, 64, "bfloat16", seed=4)
  q32 = q.astype(jnp.float32)
  lengths = jnp.array([32, 9], jnp.int32)
  for impl in ("reference", PALLAS_TRITON):
    out = jax.jit(functools.partial(decode_attention, impl=impl, block_k=16))(q32, k, v, lengths)
    assert out.dtype == jnp.float32
    assert_close(out, oracle(q, k, v, lengths), "bfloat16")


def test_combine_splits_matches_one_softmax():
  """Merging per-split (acc, max, sum) equals one softmax over the union; an all-empty row gives zeros."""
  rng = np.random.default_rng(5)
  logits = rng.standard_normal((3, 12)) * 3
  values = rng.standard_normal((12, 4))
  valid = np.ones((3, 12), bool)
  valid[1, 4:8] = False  # split 1 of row 1 is empty
  valid[2] = False  # row 2 is empty
  mask_value = -0.7 * np.finfo(np.float32).max
  acc, m, l = [], [], []  # per split: [rows, width], [rows], [rows]
  for s in range(3):
    cols = slice(4 * s, 4 * s + 4)
    ms = np.array([logits[r, cols][valid[r, cols]].max() if valid[r, cols].any() else mask_value
                   for r in range(3)])
    p = np.where(valid[:, cols], np.exp(np.minimum(logits[:, cols] - ms[:, None], 0.0)), 0.0)
    acc.append(p @ values[cols]), m.append(ms), l.append(p.sum(1))
  got = combine_splits(jnp.asarray(np.stack(acc), jnp.float32), jnp.asarray(np.stack(m), jnp.float32),
                       jnp.asarray(np.stack(l), jnp.float32))
  want = np.zeros((3, 4))
  for r in range(2):
    p = np.exp(logits[r, valid[r]] - logits[r, valid[r]].max())
    want[r] = (p / p.sum()) @ values[valid[r]]
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(got[2]), 0.0)


# ------------------------------------------------------------------------------------------------ work skipping


@pytest.mark.parametrize("max_len,block_k,num_splits", [(40, 16, 2), (300, 32, 3), (64, 16, 4)])
def test_triton_loop_visits_only_valid_blocks(max_len, block_k, num_splits):
  """The kernel's per-split trip count covers exactly the blocks holding a valid position, once each."""
  num_blocks = -(-max_len // block_k)
  split_len = block_k * -(-num_blocks // num_splits)
  lengths = jnp.arange(max_len + 1, dtype=jnp.int32)
  counts = np.stack([np.asarray(split_block_count(lengths, s, split_len, block_k)) for s in range(num_splits)], 1)
  for n, per_split in zip(np.asarray(lengths), counts):
    visited = [s * split_len + i * block_k for s in range(num_splits) for i in range(per_split[s])]
    want = list(range(0, n, block_k))
    assert visited == want, (n, per_split)


def _simulate_tpu_fetches(lengths, *, num_head_blocks, num_splits, blocks_per_split, block_k):
  """Walks the TPU grid in order and returns the K/V blocks Pallas would DMA (a fetch when the index changes)."""
  lengths = np.asarray(lengths, np.int32)
  src = np.asarray(previous_live_row(jnp.asarray(lengths)))
  index_map = functools.partial(kv_block_index, blocks_per_split=blocks_per_split, block_k=block_k,
                                num_head_blocks=num_head_blocks)
  fetches, prev = [], None
  for b in range(len(lengths)):
    for hb in range(num_head_blocks):
      for s in range(num_splits):
        for j in range(blocks_per_split):
          idx = tuple(int(i) for i in index_map(b, hb, s, j, lengths, src))
          if idx != prev:
            fetches.append(idx)
          prev = idx
  return fetches


@pytest.mark.parametrize("lengths", [[5, 0, 0, 33, 16, 0], [0, 0, 7, 40], [40, 40, 1], [0, 0, 0]])
@pytest.mark.parametrize("num_splits", [1, 2])
def test_tpu_index_map_fetches_only_valid_blocks(lengths, num_splits):
  """Blocks past a row's length and whole length-0 rows cause no DMA; every valid block is fetched exactly once."""
  block_k, num_head_blocks, num_blocks = 8, 2, 5  # max_len 40
  blocks_per_split = -(-num_blocks // num_splits)
  fetches = _simulate_tpu_fetches(lengths, num_head_blocks=num_head_blocks, num_splits=num_splits,
                                  blocks_per_split=blocks_per_split, block_k=block_k)
  want = [(b, j, hb) for b, n in enumerate(lengths) for hb in range(num_head_blocks) for j in range(-(-n // block_k))]
  if lengths[0] == 0:  # the very first grid step always fetches something
    assert fetches[0] == (0, 0, num_head_blocks - 1)
    fetches = fetches[1:]
  assert fetches == want


def test_previous_live_row():
  got = previous_live_row(jnp.array([0, 3, 0, 0, 2, 0], jnp.int32))
  np.testing.assert_array_equal(np.asarray(got), [0, 1, 1, 1, 4, 4])


# ---------------------------------------------------------------------------------------------------- dispatch


def test_select_impl_per_platform():
  q_shape, k_shape = (8, 12, 128), (8, 4096, 2, 128)
  cpu = select_impl(q_shape, k_shape, jnp.bfloat16, platform="cpu")
  assert (cpu.name, cpu.backend) == (REFERENCE, "xla") and "platform 'cpu'" in cpu.reason
  gpu = select_impl(q_shape, k_shape, jnp.bfloat16, platform="cuda")
  assert (gpu.name, gpu.backend, gpu.interpret, gpu.block_h) == (PALLAS_TRITON, "triton", False, 16)
  assert gpu.block_k & (gpu.block_k - 1) == 0 and 4096 % (gpu.block_k * gpu.num_splits) == 0
  tpu = select_impl(q_shape, k_shape, jnp.bfloat16, platform="tpu")
  assert (tpu.name, tpu.interpret, tpu.heads_per_block) == (PALLAS_MOSAIC_TPU, False, 1)
  assert tpu.block_k % 128 == 0
  forced = select_impl(q_shape, k_shape, jnp.float32, platform="cpu", impl="pallas")
  assert (forced.name, forced.interpret) == (PALLAS_TRITON, True)
  assert select_impl(q_shape, k_shape, jnp.float32, platform="tpu", impl="reference").name == REFERENCE


def test_select_impl_fallbacks_and_errors():
  # head_dim 48: not a power of 2, so no Triton kernel; auto falls back and says why, a forced kernel refuses.
  auto = select_impl((2, 4, 48), (2, 64, 2, 48), jnp.bfloat16, platform="cuda")
  assert auto.name == REFERENCE and "head_dim 48" in auto.reason
  with pytest.raises(ValueError, match="head_dim 48"):
    select_impl((2, 4, 48), (2, 64, 2, 48), jnp.bfloat16, platform="cuda", impl="pallas")
  # Mosaic packs narrow heads: head_dim 48 x 2 kv heads is one full-width block.
  assert select_impl((2, 4, 48), (2, 64, 2, 48), jnp.bfloat16, platform="tpu").heads_per_block == 2
  # head_dim 8 (tiny test models): TPU packs 2 heads per block, Triton falls back.
  assert select_impl((2, 6, 8), (2, 64, 2, 8), jnp.float32, platform="cuda").name == REFERENCE
  assert select_impl((2, 6, 8), (2, 64, 2, 8), jnp.float32, platform="tpu").name == PALLAS_MOSAIC_TPU
  # impl="pallas" on CPU interprets whichever kernel takes the shapes.
  assert select_impl((2, 6, 8), (2, 64, 2, 8), jnp.float32, platform="cpu", impl="pallas").name == PALLAS_MOSAIC_TPU
  with pytest.raises(ValueError, match="head_dim 8 not supported by the Triton kernel"):
    select_impl((2, 6, 8), (2, 64, 2, 8), jnp.float32, platform="cuda", impl="pallas")
  assert "float16" in select_impl((2, 4, 128), (2, 64, 2, 128), jnp.float16, platform="tpu").reason
  with pytest.raises(ValueError, match="impl must be one of"):
    select_impl((2, 4, 64), (2, 64, 2, 64), jnp.float32, impl="triton")
  with pytest.raises(ValueError, match="block_k=24 cannot be lowered by Triton"):
    select_impl((2, 4, 64), (2, 64, 2, 64), jnp.float32, platform="cuda", block_k=24)
  with pytest.raises(ValueError, match="block_k=100 cannot be lowered by Mosaic TPU"):
    select_impl((2, 4, 64), (2, 1000, 2, 64), jnp.float32, platform="tpu", block_k=100)
  with pytest.raises(ValueError, match="num_splits"):
    select_impl((2, 4, 64), (2, 64, 2, 64), jnp.float32, platform="cuda", num_splits=0)
  with pytest.raises(ValueError, match="interpret=True"):
    select_impl((2, 4, 64), (2, 64, 2, 64), jnp.float32, platform="cpu", impl="pallas", interpret=False)


def test_input_errors_name_the_field():
  q, k, v = make_inputs(2, 16, 4, 2, 32, "float32")
  lengths = jnp.array([3, 4], jnp.int32)
  cases = [
      ((q[:, None], k, v, lengths), "q must be"),
      ((q, k[:, :, :1].repeat(3, 2), v[:, :, :1].repeat(3, 2), lengths), "multiple of num_kv_heads"),
      ((q, k, v[:, :8], lengths), "v_cache shape"),
      ((q, k, v.astype(jnp.bfloat16), lengths), "v_cache dtype"),
      ((q, k, v, lengths[:1]), "lengths must be"),
      ((q, k, v, lengths.astype(jnp.float32)), "integer"),
      ((q[..., :16], k, v, lengths), "head_dim"),
  ]
  for args, match in cases:
    with pytest.raises(ValueError, match=match):
      decode_attention(*args)
  with pytest.raises(ValueError, match="sm_scale"):
    decode_attention(q, k, v, lengths, sm_scale=jnp.float32(0.1))


def test_choice_logged_once_per_configuration(caplog):
  q, k, v = make_inputs(2, 16, 4, 2, 32, "float32", seed=6)
  lengths = jnp.array([3, 16], jnp.int32)
  with caplog.at_level(logging.INFO, logger="kernels.decode_attention"):
    for _ in range(2):
      decode_attention(q, k, v, lengths, impl="reference", sm_scale=0.25)
    decode_attention(q, k, v, lengths, impl="pallas", block_k=16, sm_scale=0.25)
  lines = [r.getMessage() for r in caplog.records if r.name == "kernels.decode_attention"]
  assert sum("using reference: requested" in line for line in lines) == 1
  assert sum("using pallas-triton (block_k=16" in line and "interpret mode" in line for line in lines) == 1


# ---------------------------------------------------------------------------------------------------- lowering

# (num_q_heads, num_kv_heads, head_dim): this repo's tiny test models and the Qwen2.5 family ProRL starts from.
MODEL_DIMS = {
    "tiny_h16": (4, 2, 16),
    "tiny_h8": (6, 2, 8),
    "tiny_h32": (4, 2, 32),
    "tiny_mqa6": (6, 1, 16),
    "qwen2.5-0.5b": (14, 2, 64),
    "qwen2.5-1.5b": (12, 2, 128),
    "qwen2.5-7b": (28, 4, 128),
}
CACHE_LENS = (24, 1000, 9216)
BATCH_SIZES = (1, 64)
# The slow sweep adds more cache lengths and batch sizes (each changes block_k or the split count).
CACHE_LENS_SLOW = (24, 192, 1000, 4160, 9216, 33792)
BATCH_SIZES_SLOW = (1, 8, 64, 256)
CUSTOM_CALL = {"cuda": "__gpu$xla.gpu.triton", "tpu": "tpu_custom_call"}


def _lower(case, platform):
  args = [jax.ShapeDtypeStruct(case.q_shape, case.dtype), jax.ShapeDtypeStruct(case.k_shape, case.dtype),
          jax.ShapeDtypeStruct(case.k_shape, case.dtype), jax.ShapeDtypeStruct(case.q_shape[:1], jnp.int32)]
  fn = functools.partial(decode_attention, platform=case.platform)  # impl="auto", as the sampler calls it
  return jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()


def _check_sampler_configurations_lower(model, cache_lens, batch_sizes):
  num_q_heads, num_kv_heads, head_dim = MODEL_DIMS[model]
  cases = sampler_kernel_cases(num_q_heads=num_q_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
                               cache_lens=cache_lens, batch_sizes=batch_sizes)
  assert len(cases) == len(cache_lens) * len(batch_sizes) * 2 * 2
  for case in cases:
    if head_dim == 8 and case.platform == "cuda":
      assert case.choice.name == REFERENCE and "head_dim 8" in case.choice.reason
      continue
    assert case.choice.name == (PALLAS_TRITON if case.platform == "cuda" else PALLAS_MOSAIC_TPU), case
    assert CUSTOM_CALL[case.platform] in _lower(case, case.platform), case


@pytest.mark.parametrize("model", list(MODEL_DIMS))
def test_every_sampler_configuration_lowers(model):
  """Each kernel configuration `impl="auto"` picks for these dims lowers through Triton (cuda) and Mosaic (tpu)."""
  _check_sampler_configurations_lower(model, CACHE_LENS, BATCH_SIZES)


@pytest.mark.slow
@pytest.mark.parametrize("model", list(MODEL_DIMS))
def test_every_sampler_configuration_lowers_sweep(model):
  _check_sampler_configurations_lower(model, CACHE_LENS_SLOW, BATCH_SIZES_SLOW)


def _triton_modules(lowered) -> list[str]:
  """The Triton IR inside each Triton custom call of a lowered computation, parsed back and verified."""
  from jax._src.interpreters import mlir as jax_mlir  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  from jax._src.lib.triton import dialect as tt_dialect  # pylint: disable=g-import-not-at-top

  calls = []

  def walk(op):
    for region in op.regions:
      for block in region.blocks:
        for child in block.operations:
          if child.operation.name == "stablehlo.custom_call" and "__gpu$xla.gpu.triton" in str(child):
            calls.append(child)
          walk(child.operation)

  walk(lowered.compiler_ir("stablehlo").operation)
  texts = []
  for call in calls:
    config = ir.DictAttr(call.attributes["mhlo.backend_config"])
    ctx = ir.Context()
    tt_dialect.register_dialect(ctx)
    ctx.append_dialect_registry(jax_mlir.upstream_dialects)
    ctx.load_all_available_dialects()
    with ctx:
      module = ir.Module.parse(ir.StringAttr(config["ir"]).value_bytes)
      assert module.operation.verify()
      texts.append(str(module))
  return texts


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_triton_ir_verifies_and_loops_only_to_the_length(dtype):
  """The Triton module passes the MLIR verifier, and its one block loop has a runtime trip count (derived from
  the row length), not the static number of blocks: blocks past the length are never visited."""
  spec = [jax.ShapeDtypeStruct((8, 12, 128), dtype), jax.ShapeDtypeStruct((8, 1000, 2, 128), dtype),
          jax.ShapeDtypeStruct((8, 1000, 2, 128), dtype), jax.ShapeDtypeStruct((8,), jnp.int32)]
  lowered = jax.jit(functools.partial(decode_attention, platform="cuda")).trace(*spec).lower(
      lowering_platforms=("cuda",))
  [text] = _triton_modules(lowered)
  loops = re.findall(r"scf\.for %\S+ = %\S+ to (%\S+) step", text)
  assert len(loops) == 1, loops
  # Follow the bound's SSA operands back: they must reach the load of the row's int32 length.
  defs = {}
  for line in text.splitlines():
    match = re.match(r"\s*(%[\w#]+)(?::\d+)? = (.*)", line)
    if match:
      defs[match.group(1)] = match.group(2)
  [length_load] = [name for name, rhs in defs.items() if rhs.startswith("tt.load") and "!tt.ptr<i32>" in rhs]
  seen, todo = set(), [loops[0]]
  while todo:
    name = todo.pop()
    if name not in seen:
      seen.add(name)
      todo.extend(re.findall(r"%[\w]+", defs.get(name, "").split(":")[0]))
  assert length_load in seen, f"loop bound {loops[0]} does not depend on the length"
  assert text.count("tt.dot") == 2
  # The loop body loads one K and one V tile, both masked by the length (ptr, mask, other).
  body = text[text.index("scf.for"):text.index("scf.yield")]
  assert body.count("tt.load") == 2 and len(re.findall(r"tt\.load %\S+, %\S+, %\S+ :", body)) == 2, body


def test_backends_reject_blocks_they_cannot_take():
  """The accelerator lowerings themselves refuse shapes the dispatcher steers around."""
  spec = lambda *shape, dtype=jnp.bfloat16: jax.ShapeDtypeStruct(shape, dtype)
  lengths = spec(2, dtype=jnp.int32)

  def lower_triton(head_dim, block_k):
    fn = functools.partial(decode_partials_triton, sm_scale=0.1, block_k=block_k, num_splits=1, block_h=16)
    kv = spec(2, 96, 2, head_dim)
    jax.jit(fn).trace(spec(2, 2, 6, head_dim), kv, kv, lengths).lower(lowering_platforms=("cuda",))

  def lower_tpu(head_dim, block_k):
    fn = functools.partial(decode_partials_tpu, sm_scale=0.1, block_k=block_k, num_splits=1, heads_per_block=1)
    kv = spec(2, 1000, 2, head_dim)
    jax.jit(fn).trace(spec(2, 2, 16, head_dim), kv, kv, lengths).lower(lowering_platforms=("tpu",))

  lower_triton(64, 32)
  with pytest.raises(ValueError, match="power of 2"):
    lower_triton(64, 24)  # block_k not a power of 2
  with pytest.raises(ValueError, match="power of 2"):
    lower_triton(48, 16)  # head_dim not a power of 2
  lower_tpu(128, 128)
  with pytest.raises(ValueError, match="divisible by 8 and 128"):
    lower_tpu(128, 100)  # block_k not a multiple of 8
  with pytest.raises(ValueError, match="divisible by 8 and 128"):
    lower_tpu(64, 128)  # a 64-lane block of a 128-lane row: needs 2 heads per block


# ------------------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("dims", [(1, 1, 16), (4, 2, 32), (8, 2, 64), (12, 2, 128), (16, 2, 64), (6, 3, 128)])
@pytest.mark.parametrize("blocks", [(None, None), (32, 1), (16, 5), (64, 3)])
def test_kernel_sweep(kernel, dtype, dims, blocks):
  num_q_heads, num_kv_heads, head_dim = dims
  block_k, num_splits = blocks
  if kernel == PALLAS_TRITON and block_k is not None and block_k < 16:
    pytest.skip("Triton tiles need >= 16 rows")
  q, k, v = make_inputs(8, 300, num_q_heads, num_kv_heads, head_dim, dtype, seed=sum(dims))
  rng = np.random.default_rng(7)
  lengths = jnp.asarray(np.concatenate([[0, 1, 300, 301], rng.integers(0, 300, 4)]), jnp.int32)
  out = jax.jit(functools.partial(decode_attention, impl=kernel, block_k=block_k, num_splits=num_splits))(
      q, k, v, lengths)
  assert_close(out, oracle(q, k, v, lengths), dtype)


@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
  """benchmarks/decode_attention.py --smoke runs both kernels (interpret mode) and reports every field."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "decode_attention.py"
  spec = importlib.util.spec_from_file_location("decode_attention_benchmark", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  report = bench.main(["--smoke", "--distributions", "longtail,half_finished", "--out", str(tmp_path / "r.json")])
  assert report["measured_copy_gbps"] > 0 and (tmp_path / "r.json").exists()
  assert {r["kernel"] for r in report["results"]} == {PALLAS_TRITON, PALLAS_MOSAIC_TPU}
  for row in report["results"]:
    assert row["max_abs_diff_vs_reference"] < 1e-4 and row["kernel_us"] > 0
    assert row["kernel_bytes"] < row["reference_bytes"]  # ragged rows need fewer bytes than dense attention
  assert bench.peak_gbps("NVIDIA H100 80GB HBM3") == 3350.0 and bench.peak_gbps("NVIDIA H200") == 4800.0
  assert bench.peak_gbps("NVIDIA H100 PCIe") == 2000.0 and bench.peak_gbps("cpu") is None
