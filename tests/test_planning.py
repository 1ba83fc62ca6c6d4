"""Planning without hardware: topology names, chip facts, loop-aware costs, kernels chosen by the target platform,
multi-slice meshes, and `python -m experiments.plan` end to end for a TPU topology (libtpu, compile-only devices)."""

import json
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from prorl_jax import models, parallel
from prorl_jax.parallel import chips, gpu_targets, topology
from prorl_jax.planning import hlo_cost
from prorl_jax.training import mfu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBTPU, LIBTPU_REASON = topology.libtpu_status()
needs_libtpu = pytest.mark.skipif(not LIBTPU, reason=f"libtpu unavailable: {LIBTPU_REASON}")


@pytest.mark.parametrize("name, expected", [
    ("v5p:2x2x2", ("tpu", "v5p", (2, 2, 2))),
    ("v5p-8", ("tpu", "v5p", (2, 2, 1))),  # 8 TensorCores = 4 chips
    ("v5p-16", ("tpu", "v5p", (2, 2, 2))),
    ("v4-8", ("tpu", "v4", (2, 2, 1))),
    ("v5e-8", ("tpu", "v5e", (2, 4))),  # chips
    ("v5litepod-16", ("tpu", "v5e", (4, 4))),
    ("V6E-8", ("tpu", "v6e", (2, 4))),
    ("v6e:2x2", ("tpu", "v6e", (2, 2))),
    ("h100:8", ("gpu", "h100", (1, 8))),
    ("h200-2x8", ("gpu", "h200", (2, 8))),
])
def test_topology_names(name, expected):
  assert topology.parse_name(name) == expected


@pytest.mark.parametrize("name, words", [
    ("v9z:2x2", ["unknown accelerator", "v5p:2x2x2"]),
    ("v5p-6", ["TensorCores", "[8, 16"]),
    ("v5e-3", ["chips", "[1, 4, 8"]),
    ("tpu", ["not a topology name"]),
    ("h100:2x2x2", ["HOSTSxGPUS"]),
])
def test_bad_topology_names_say_what_is_accepted(name, words):
  with pytest.raises(topology.TopologyError) as e:
    topology.parse_name(name)
  for word in words:
    assert word in str(e.value)
  assert isinstance(e.value, models.ConfigError)  # exit code 2 in the entry points


def test_chip_table_by_device_kind():
  assert chips.chip_for_kind("TPU v5 lite").name == "v5e"
  assert chips.chip_for_kind("TPU v5").name == "v5p"  # JAX's name for a v5p chip
  assert chips.chip_for_kind("TPU v6 lite").name == "v6e"
  assert chips.chip_for_kind("TPU v4").name == "v4"
  assert chips.chip_for_kind("NVIDIA H100 80GB HBM3").name == "h100"
  assert chips.chip_for_kind("TPU v5 ultra") is None and chips.chip_for_kind("cpu") is None
  v4 = chips.chip_by_name("v4")
  half = v4.per_device(2)
  assert half.hbm_bytes * 2 == v4.hbm_bytes and half.peak_bf16_flops * 2 == v4.peak_bf16_flops
  # The MFU metric reads the same table (a v5p was "unknown" there before: it reports "TPU v5").
  assert mfu.peak_flops_from_table(types.SimpleNamespace(device_kind="TPU v5", platform="tpu")) == 459e12


@pytest.mark.parametrize("use_tpu", [False, pytest.param(True, marks=needs_libtpu)])
def test_loop_aware_cost_counts_every_trip(use_tpu):
  m, k = 64, 512
  w_spec = jax.ShapeDtypeStruct((k, k), jnp.float32)
  x_spec = jax.ShapeDtypeStruct((m, k), jnp.float32)

  def f(x, w):
    def outer(i, x):
      return jax.lax.fori_loop(0, 3, lambda j, y: jnp.tanh(y @ w), x)
    x = jax.lax.fori_loop(0, 10, outer, x)
    x, _ = jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=4)
    # A counter stepping by 2 (as XLA's bidirectional collective matmuls do): 5 trips.
    x, _ = jax.lax.while_loop(lambda c: c[1] < 10, lambda c: (jnp.sin(c[0] @ w), c[1] + 2), (x, 0))
    return jax.lax.while_loop(lambda c: jnp.sum(c[0]) < 1e30, lambda c: (c[0] @ w + 1.0, c[1] + 1), (x, 0))

  if use_tpu:
    devices = topology.topology("v5e:1x1").devices
    mesh = Mesh(np.array(devices), ("d",))
    x_spec = jax.ShapeDtypeStruct(x_spec.shape, x_spec.dtype, sharding=NamedSharding(mesh, P()))
    w_spec = jax.ShapeDtypeStruct(w_spec.shape, w_spec.dtype, sharding=NamedSharding(mesh, P()))
  compiled = jax.jit(f).lower(x_spec, w_spec).compile()
  cost = hlo_cost.program_cost(compiled.as_text(), unknown_trips=7)
  matmul = 2 * m * k * k
  # An independent count: 10 x 3 + 4 + 5 + 7 matmuls (the data-dependent while loop at the 7 trips we assume).
  assert cost.flops == pytest.approx((30 + 4 + 5 + 7) * matmul, rel=0.01)
  known = sorted(l.trips for l in cost.loops if l.known)
  assert known == [3, 4, 5, 10] and [l.trips for l in cost.loops if not l.known] == [7]
  once = hlo_cost.compiler_cost(compiled)
  assert once["flops"] < 5 * matmul  # what XLA's own analysis reports: every body once


def test_architecture_without_weights(tmp_path, monkeypatch):
  config, source = models.load_architecture("nvidia/Nemotron-Research-Reasoning-Qwen-1.5B")
  assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (1536, 28, 151936)
  assert "built-in" in source
  seven, _ = models.load_architecture("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", dtype="bfloat16")
  assert 7.5e9 < seven.num_params() < 7.7e9 and seven.dtype == "bfloat16"
  local = tmp_path / "model"
  local.mkdir()
  (local / "config.json").write_text(json.dumps(models.Qwen2Config(
      vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
      num_key_value_heads=1).to_hf_dict()))
  assert models.load_architecture(str(local))[0].hidden_size == 32  # no weights needed
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(models.CheckpointError, match="local directory holding its config.json"):
    models.load_architecture("someone/unknown-model")


@needs_libtpu
def test_kernel_follows_the_mesh_not_the_host():
  from kernels.decode_attention import decode_attention

  devices = topology.topology("v5e:1x1").devices
  mesh = Mesh(np.array(devices), ("d",))
  q = jax.ShapeDtypeStruct((8, 12, 128), jnp.bfloat16, sharding=NamedSharding(mesh, P()))
  k = jax.ShapeDtypeStruct((8, 1024, 2, 128), jnp.bfloat16, sharding=NamedSharding(mesh, P()))
  lengths = jax.ShapeDtypeStruct((8,), jnp.int32, sharding=NamedSharding(mesh, P()))
  with jax.set_mesh(mesh):
    text = jax.jit(decode_attention).lower(q, k, k, lengths).compile().as_text()
  assert "tpu_custom_call" in text  # the Mosaic kernel, compiled (not interpret mode)
  cpu = jax.jit(decode_attention).lower(jnp.zeros((8, 12, 128), jnp.bfloat16), jnp.zeros((8, 64, 2, 128),
                                                                                        jnp.bfloat16),
                                        jnp.zeros((8, 64, 2, 128), jnp.bfloat16), jnp.ones((8,), jnp.int32)).as_text()
  assert "custom_call" not in cpu  # on the CPU backend, the XLA reference


@needs_libtpu
def test_multi_slice_mesh_puts_data_across_slices():
  topo = topology.topology("v5p-8", num_slices=2)
  assert len(topo.devices) == 8 and topo.processes == 2 and topo.num_slices == 2
  mesh = parallel.make_mesh(dict(data=2, fsdp=-1, tensor=1), devices=topo.devices)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  for i in range(2):  # each data index is one whole slice: only the data axis crosses DCN
    assert {d.slice_index for d in mesh.devices[i].flat} == {i}
  with pytest.raises(models.ConfigError, match="mesh.data=2"):
    parallel.make_mesh(dict(data=1, fsdp=-1, tensor=1), devices=topo.devices)


def _plan(tmp_path, *args):
  out = tmp_path / "plan.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1")
  env["XLA_FLAGS"] = ""  # the plan runs on one CPU device; the topology provides the devices
  proc = subprocess.run([sys.executable, "-m", "experiments.plan", *args, f"--json={out}", "--quiet"], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)
  result = json.loads(out.read_text()) if out.exists() else None
  return proc, result


@needs_libtpu
def test_plan_of_the_tiny_config_on_v5e(tmp_path):
  proc, result = _plan(tmp_path, "--config=experiments/configs/tiny.py", "--topology=v5e:2x2",
                       "--config.model.attention_impl=pallas")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert result["fits"] and result["chip"] == "v5e" and result["topology"] == "v5e:2x2"
  assert result["decode_kernel"] == "pallas_mosaic_tpu", result["decode_custom_calls"]
  assert set(result["phases"]) == {"prefill", "decode", "logprobs", "update"}
  for name, phase in result["phases"].items():
    assert 0 < phase["peak_gib"] < result["hbm_gib"] and phase["fits"], name
    assert phase["flops"] > 0 and phase["bytes_accessed"] > 0 and phase["est_seconds"] > 0, name
  decode = result["phases"]["decode"]["programs"][0]
  # The decode loop runs max_new_tokens - 1 steps after the prefill's first token; the plan counts each.
  assert [(l["trips"], l["known"]) for l in decode["loops"]] == [(15, False)]
  assert decode["flops_per_run"] > 10 * decode["compiler_once"]["flops"]
  assert result["step_estimate_s"] == pytest.approx(sum(p["est_seconds"] for p in result["phases"].values()))
  assert result["tokens_per_s_per_chip"] > 0 and 0 < result["mfu"] < 1
  assert "decode" in proc.stdout and "step estimate" in proc.stdout


@needs_libtpu
@pytest.mark.slow  # compiles the tiny config's phases several times (the suggested fixes); ~1 min
def test_plan_that_does_not_fit_exits_3_naming_fields(tmp_path):
  proc, result = _plan(tmp_path, "--config=experiments/configs/tiny.py", "--topology=v5e:2x2", "--hbm_gib=0.012")
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert not result["fits"]
  bad = [n for n, p in result["phases"].items() if not p["fits"]]
  assert bad
  for name in bad:
    assert f"{name} needs" in proc.stderr and "over the" in proc.stderr
  assert "--config." in proc.stderr  # the fields predicted to bring it under
  fixes = [f for n in bad for f in result["phases"][n]["fixes"]]
  assert any(f.get("verified_fits") for f in fixes), fixes  # one of them compiled and fits


@pytest.mark.parametrize("args, words", [
    (["--topology=v9z:2x2"], ["unknown accelerator"]),
    (["--topology=v5e:2x2", "--config.model.path=someone/unknown-model"], ["config.json"]),
    (["--topology=v5e:2x2", "--config.batch.micro_batch_size=7"], ["batch.micro_batch_size"]),
    (["--topology=v5e:2x2", "--config.mesh.tensor=3"], ["config.mesh"]),
])
def test_plan_bad_input_exits_2(tmp_path, args, words):
  if not LIBTPU and "v9z" not in args[0]:
    pytest.skip(f"libtpu unavailable: {LIBTPU_REASON}")
  proc, _ = _plan(tmp_path, "--config=experiments/configs/tiny.py", *args)
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  for word in words:
    assert word in proc.stderr
  assert "Traceback" not in proc.stderr


@pytest.mark.skipif(not gpu_targets.cuda_plugin_status()[0], reason=gpu_targets.cuda_plugin_status()[1])
def test_plan_of_the_tiny_config_on_h100(tmp_path):
  proc, result = _plan(tmp_path, "--config=experiments/configs/tiny.py", "--topology=h100:8")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert result["chip"] == "h100" and result["devices"] == 8 and result["fits"]
  assert result["decode_kernel"] == "pallas_triton", result["decode_custom_calls"]


@pytest.mark.slow
@needs_libtpu
def test_plan_of_the_nemotron_config_on_v5p(tmp_path):
  proc, result = _plan(tmp_path, "--config=experiments/configs/nemotron_1p5b_prorlv2.py", "--topology=v5p:2x2x2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert result["fits"] and result["hosts"] == 2
  assert result["decode_kernel"] == "pallas_mosaic_tpu"
  assert result["step_estimate_s"] > 0
