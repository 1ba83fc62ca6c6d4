"""The device mesh of a run: three named axes, `data` (pure data parallel), `fsdp` (data parallel with params,
gradients and optimizer state sharded, ZeRO-3 style) and `tensor` (Megatron-style model parallel).

`config.mesh` gives each axis a size; the sizes multiply to the device count, and one of them may be -1 for "the
devices that are left". Axes are `AxisType.Auto`, i.e. classic GSPMD: shardings are placed on inputs and outputs
and XLA propagates them (see ENVIRONMENT.md §5 on why the axis types must not be mixed).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from prorl_jax.errors import ConfigError

AXES = ("data", "fsdp", "tensor")
# Axes a batch (rows of a train batch, rollout rows, KV-cache rows) is split over.
BATCH_AXES = ("data", "fsdp")


def _sizes_from(mesh_config: Any) -> dict[str, Any]:
  """{axis: size} from `config.mesh`, a whole run config (with a `mesh` field) or a plain dict."""
  if mesh_config is None:
    return {"data": 1, "fsdp": -1, "tensor": 1}
  if "mesh" in mesh_config:  # a whole run config (whose "data" field is the dataset section)
    mesh_config = mesh_config["mesh"]
  unknown = sorted(k for k in mesh_config.keys() if k not in AXES + ("devices",))
  if unknown:
    raise ConfigError(f"config.mesh has unknown axes {unknown}; the axes are {AXES}")
  return {axis: mesh_config[axis] if axis in mesh_config else 1 for axis in AXES}


def mesh_shape(mesh_config: Any, num_devices: int) -> dict[str, int]:
  """Resolves `config.mesh` {data, fsdp, tensor} (one may be -1) to sizes multiplying to `num_devices`.

  Raises ConfigError naming the field and the fix when sizes are not positive, more than one is -1, or the
  product does not match the device count.
  """
  sizes = _sizes_from(mesh_config)
  for axis, size in sizes.items():
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or (size < 1 and size != -1):
      raise ConfigError(f"config.mesh.{axis} must be a positive integer or -1 (the remaining devices), "
                        f"got {size!r}")
  rest = [axis for axis, size in sizes.items() if size == -1]
  if len(rest) > 1:
    raise ConfigError(f"config.mesh: only one axis may be -1, got {rest}; give explicit sizes to all but one")
  known = math.prod(int(s) for s in sizes.values() if s != -1)
  if rest:
    if num_devices % known:
      raise ConfigError(
          f"config.mesh.{rest[0]} = -1 cannot be resolved: the other axes multiply to {known}, which does not "
          f"divide the {num_devices} devices; change the sizes of the other axes")
    sizes[rest[0]] = num_devices // known
  total = math.prod(int(s) for s in sizes.values())
  if total != num_devices:
    shown = " x ".join(f"{a}={sizes[a]}" for a in AXES)
    raise ConfigError(f"config.mesh ({shown}) covers {total} devices but {num_devices} are available; make the "
                      "sizes multiply to the device count, or set one of them to -1")
  return {axis: int(sizes[axis]) for axis in AXES}


def make_mesh(mesh_config: Any = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A `Mesh` with axes ("data", "fsdp", "tensor") of `Auto` type over `devices` (default: all devices).

  Args:
    mesh_config: `config.mesh` (or the whole run config, or a dict) with sizes data/fsdp/tensor, one may be -1;
      None means all devices on `fsdp`.
    devices: the devices to use, in order; default `jax.devices()` (every process's devices, for multi-host), or
      compile-only devices of a topology (`prorl_jax.parallel.topology`).

  Devices of several TPU slices (a multi-slice job: devices carry distinct `slice_index`) are laid out as
  `mesh_utils.create_hybrid_device_mesh` does: "data" spans the slices over DCN, everything else stays inside a
  slice on ICI, so config.mesh.data must be a multiple of the slice count.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_shape(mesh_config, len(devices))
  shape = tuple(sizes[a] for a in AXES)
  auto = (AxisType.Auto,) * len(AXES)
  slices = len({getattr(d, "slice_index", None) or 0 for d in devices})
  if slices > 1:
    if sizes["data"] % slices:
      raise ConfigError(f"config.mesh.data = {sizes['data']} must be a multiple of the {slices} slices: the data "
                        f"axis spans the slices over DCN; set --config.mesh.data={slices} (fsdp=-1 fills each slice)")
    ici = (sizes["data"] // slices, sizes["fsdp"], sizes["tensor"])
    grid = mesh_utils.create_hybrid_device_mesh(ici, (slices, 1, 1), devices, allow_split_physical_axes=True)
    return Mesh(grid, AXES, axis_types=auto)
  if len(devices) == len(jax.devices()) or devices[0].platform != jax.default_backend():
    # A whole slice (attached, or compile-only devices of a topology): jax.make_mesh orders devices by the physical
    # topology (ICI rings on TPU, NVLink domains on GPU).
    return jax.make_mesh(shape, AXES, axis_types=auto, devices=devices)
  return Mesh(np.asarray(devices, dtype=object).reshape(shape), AXES, axis_types=auto)


def axis_size(mesh: Mesh | None, axes: str | Sequence[str] | None) -> int:
  """Product of the sizes of `axes` in `mesh`; axes the mesh does not have count as 1."""
  if mesh is None or axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  return math.prod(int(mesh.shape[a]) for a in axes if a in mesh.shape)


def batch_axes(mesh: Mesh | None) -> tuple[str, ...]:
  """The batch axes ("data", "fsdp") that `mesh` has, in order (a rollout mesh may have only "data")."""
  if mesh is None:
    return ()
  return tuple(a for a in BATCH_AXES if a in mesh.shape)


def describe(mesh: Mesh) -> str:
  """One log line, e.g. "mesh data=2 x fsdp=4 x tensor=1 over 8 cpu devices (1 process)"."""
  shape = " x ".join(f"{name}={size}" for name, size in mesh.shape.items())
  kind = mesh.devices.flat[0].platform
  procs = len({d.process_index for d in mesh.devices.flat})
  return f"mesh {shape} over {mesh.devices.size} {kind} devices ({procs} process{'es' if procs > 1 else ''})"


def mesh_or_one_device(mesh: Mesh | None) -> Mesh:
  """`mesh`, or a mesh of the default device when None: the one layout of an unsplit computation."""
  return make_mesh(dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1]) if mesh is None else mesh
