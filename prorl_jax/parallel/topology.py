"""Devices of an accelerator slice that is not attached: compile-only devices for deviceless (AOT) compilation.

`topology("v5p:2x2x2")` returns the devices a TPU v5p slice of 8 chips would show to JAX, built by libtpu without a
TPU (`jax.experimental.topologies`, as MaxText's `train_compile.py` does). A `Mesh` over them and
`jax.jit(f).lower(abstract args).compile()` give the executable a TPU host would build, with its memory and cost
analyses. Names are libtpu's (`v5e:2x4`, `v5p:2x2x2`, `v6e:2x4`, `v4:2x2x1`) or Cloud TPU accelerator types
(`v5litepod-8`, `v5e-8`, `v6e-8`: chips; `v5p-8`, `v4-8`: TensorCores, two per chip); `num_slices` joins several
slices over the data-centre network (DCN) as a multi-slice job does.

NVIDIA targets (`h100:8`, `h200:2x8`: hosts x GPUs) need the JAX CUDA plugin (`jax[cuda12]`), which compiles for a
named GPU on a machine without one when given the chip's target description.

libtpu is an optional dependency (`pip install -e .[tpu-aot]`). Where it is missing or cannot run (not Linux
x86_64), `TopologyUnavailable` says why and how to get it.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
from typing import Any

from prorl_jax.errors import ConfigError
from prorl_jax.parallel import chips as chips_lib
from prorl_jax.parallel import gpu_targets
from prorl_jax.platform_env import quiet_tpu_probe  # noqa: F401  (re-exported: the entry points call it)

# libtpu's generation names; Cloud TPU accelerator-type prefixes map onto them.
_TPU_GENERATIONS = {"v4": "v4", "v5e": "v5e", "v5litepod": "v5e", "v5lite": "v5e", "v5p": "v5p", "v6e": "v6e"}
# Generations whose accelerator-type number counts TensorCores (two per chip) rather than chips.
_COUNTS_CORES = ("v4", "v5p")
# Chips per host (bounds of one host's block of the chip grid): 4 on v4 / v5p hosts, up to 8 on v5e / v6e hosts.
_HOST_BOUNDS = {"v4": (2, 2, 1), "v5p": (2, 2, 1), "v5e": (2, 4, 1), "v6e": (2, 4, 1)}
# Slice shapes of the accelerator types (cloud.google.com/tpu/docs/v4, v5e, v5p, v6e).
_SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}
_SHAPES_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8),
              256: (4, 8, 8), 512: (8, 8, 8)}
GPU_CHIPS = ("h100", "h200")


class TopologyError(ConfigError):
  """A topology name or slice count that names no buildable slice; the message gives the accepted forms."""


class TopologyUnavailable(RuntimeError):
  """The compiler for the topology's platform is not installed or cannot run on this machine."""


@dataclasses.dataclass(frozen=True)
class Topology:
  """Compile-only devices of a slice (or several), and what they are.

  Attributes:
    name: canonical name ("v5p:2x2x2", "h100:1x8").
    platform: "tpu" or "gpu".
    chip: the chip's published figures, per JAX device (`Chip.per_device`).
    num_slices: slices joined over DCN (their devices carry `slice_index`).
    devices: every device, slice after slice.
    processes: host processes the job would run (one per host).
  """

  name: str
  platform: str
  chip: chips_lib.Chip
  num_slices: int
  devices: tuple[Any, ...]
  processes: int

  @property
  def describe(self) -> str:
    slices = f" x {self.num_slices} slices" if self.num_slices > 1 else ""
    return (f"{self.name}{slices}: {len(self.devices)} {self.chip.name} devices on {self.processes} "
            f"host{'s' if self.processes > 1 else ''}")

  def local_devices(self, process: int = 0) -> list[Any]:
    """The devices one host process owns (what `jax.local_devices()` returns there)."""
    return [d for d in self.devices if d.process_index == process]


def _accepted() -> str:
  return ("a libtpu topology such as v5e:2x4, v5p:2x2x2, v6e:2x4, v4:2x2x1, a Cloud TPU accelerator type such as "
          "v5litepod-8, v5e-8, v5p-8, v6e-8, v4-8, or a GPU target " + ", ".join(f"{g}:8" for g in GPU_CHIPS)
          + " (hosts x GPUs, e.g. h100:2x8)")


def parse_name(name: str) -> tuple[str, str, tuple[int, ...]]:
  """(platform, chip name, slice shape) of a topology name; TopologyError naming the accepted forms otherwise.

  TPU shapes are the chip grid ("v5p-8" -> ("tpu", "v5p", (2, 2, 1))); GPU shapes are (hosts, GPUs per host).
  """
  text = name.strip().lower()
  match = re.fullmatch(r"([a-z0-9]+?)[:\-]([0-9x]+)", text)
  if not match:
    raise TopologyError(f"--topology={name!r} is not a topology name; use {_accepted()}")
  prefix, rest = match.groups()
  dims = tuple(int(x) for x in rest.split("x") if x)
  if not dims or any(d < 1 for d in dims):
    raise TopologyError(f"--topology={name!r}: the shape {rest!r} must be positive integers joined by 'x'")
  if prefix in GPU_CHIPS:
    shape = (1,) + dims if len(dims) == 1 else dims
    if len(shape) != 2:
      raise TopologyError(f"--topology={name!r}: a GPU target is {prefix}:GPUS or {prefix}:HOSTSxGPUS")
    return "gpu", prefix, shape
  generation = _TPU_GENERATIONS.get(prefix)
  if generation is None:
    raise TopologyError(f"--topology={name!r}: unknown accelerator {prefix!r}; use {_accepted()}")
  if ":" in text:  # libtpu's own form: the chip grid
    return "tpu", generation, dims
  if len(dims) != 1:
    raise TopologyError(f"--topology={name!r}: an accelerator type is GENERATION-COUNT, e.g. v5p-8")
  count = dims[0]
  chips = count // 2 if generation in _COUNTS_CORES else count
  table = _SHAPES_3D if generation in _COUNTS_CORES else _SHAPES_2D
  if generation in _COUNTS_CORES and count % 2 or chips not in table:
    unit = "TensorCores (2 per chip)" if generation in _COUNTS_CORES else "chips"
    sizes = sorted(2 * c for c in table) if generation in _COUNTS_CORES else sorted(table)
    raise TopologyError(f"--topology={name!r}: {prefix}-N counts {unit}; N must be one of {sizes}")
  return "tpu", generation, table[chips]


def _host_bounds(generation: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
  bounds = _HOST_BOUNDS[generation]
  grid = tuple(shape) + (1,) * (3 - len(shape))
  # A slice smaller than a host's block is one host (e.g. v5e 1x1, 2x2).
  return tuple(min(b, g) for b, g in zip(bounds, grid))  # type: ignore[return-value]


def libtpu_status() -> tuple[bool, str]:
  """(available, reason): whether libtpu can compile TPU programs here."""
  if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
    return False, (f"libtpu runs on Linux x86_64 only (this machine: {platform.system()} {platform.machine()}); "
                   "plan on a Linux x86_64 host")
  try:
    import libtpu  # noqa: F401  (the package that ships libtpu.so)
  except ImportError:
    return False, ("libtpu is not installed; install the TPU compiler with `pip install -e .[tpu-aot]` (libtpu "
                   "pinned to this jax's version)")
  return True, ""


def topology(name: str, num_slices: int = 1) -> Topology:
  """The compile-only devices of `num_slices` slices of topology `name` (see the module docstring).

  Raises TopologyError for a bad name or slice count, TopologyUnavailable when the platform's compiler is missing.
  """
  if isinstance(num_slices, bool) or not isinstance(num_slices, int) or num_slices < 1:
    raise TopologyError(f"--num_slices must be a positive integer, got {num_slices!r}")
  kind, chip_name, shape = parse_name(name)
  if kind == "gpu":
    if num_slices != 1:
      raise TopologyError("--num_slices applies to TPU slices; for several GPU hosts use HOSTSxGPUS, e.g. h100:2x8")
    try:
      devices = gpu_targets.gpu_devices(chip_name, hosts=shape[0], gpus_per_host=shape[1])
    except RuntimeError as e:
      raise TopologyUnavailable(str(e)) from e
    except ValueError as e:
      raise TopologyError(str(e)) from e
    return Topology(f"{chip_name}:{shape[0]}x{shape[1]}", "gpu", chips_lib.chip_by_name(chip_name), 1, devices,
                    len({d.process_index for d in devices}))
  ok, reason = libtpu_status()
  if not ok:
    raise TopologyUnavailable(reason)
  quiet_tpu_probe()
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  from jax.experimental import topologies

  canonical = f"{chip_name}:{'x'.join(str(d) for d in shape)}"
  kwargs: dict[str, Any] = dict(chips_per_host_bounds=_host_bounds(chip_name, shape))
  if chip_name in _COUNTS_CORES:
    kwargs["chip_config_name"] = "megacore"  # one JAX device per chip, as on a v4 / v5p host
  if num_slices > 1:
    kwargs["num_slices"] = num_slices
  try:
    desc = topologies.get_topology_desc(topology_name=canonical, platform="tpu", **kwargs)
  except Exception as e:  # libtpu's own message says what is wrong with the shape
    raise TopologyError(f"--topology={name!r} ({canonical}) cannot be built: {str(e).splitlines()[0]}; use "
                        f"{_accepted()}") from e
  devices = tuple(desc.devices)
  chip = chips_lib.chip_by_name(chip_name).per_device(chips_lib.devices_per_chip(devices))
  processes = len({d.process_index for d in devices})
  return Topology(canonical, "tpu", chip, num_slices, devices, processes)

