"""Published facts of the accelerator chips prorl_jax plans for: HBM, dense bf16 peak, HBM bandwidth.

One table, read by the MFU metric (`prorl_jax.training.mfu`) and by the planner (`prorl_jax.planning`). Figures are
per chip from the vendors' pages; a JAX device is a chip except on TPU v4 compiled per TensorCore, where
`devices_per_chip` splits the chip's figures (see `per_device`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip.

  Attributes:
    name: short name used in topology names and reports ("v5p", "h100").
    kinds: substrings of `jax.Device.device_kind` that identify it (matched case-insensitively, longest first).
    hbm_bytes: HBM capacity per chip that programs may use: the datasheet's, or less where the compiler says so
      (libtpu reserves some: "available HBM" in its out-of-memory errors).
    peak_bf16_flops: dense (no sparsity) bf16 matmul FLOP/s per chip.
    hbm_bytes_per_s: HBM bandwidth per chip.
    source: where the figures come from.
  """

  name: str
  kinds: tuple[str, ...]
  hbm_bytes: int
  peak_bf16_flops: float
  hbm_bytes_per_s: float
  source: str

  def per_device(self, devices_per_chip: int = 1) -> "Chip":
    """The same chip's figures split over `devices_per_chip` JAX devices (TensorCores compiled separately)."""
    if devices_per_chip == 1:
      return self
    n = devices_per_chip
    return dataclasses.replace(self, hbm_bytes=self.hbm_bytes // n, peak_bf16_flops=self.peak_bf16_flops / n,
                               hbm_bytes_per_s=self.hbm_bytes_per_s / n)


CHIPS: tuple[Chip, ...] = (
    # cloud.google.com/tpu/docs/v4: 275 TFLOPs bf16, 32 GiB HBM2, 1200 GBps per chip (two TensorCores).
    Chip("v4", ("TPU v4",), 32 * GiB, 275e12, 1200e9, "cloud.google.com/tpu/docs/v4"),
    # cloud.google.com/tpu/docs/v5e: 197 TFLOPs bf16, 16 GB HBM2 at 819 GBps per chip, 8 chips per host; libtpu
    # 0.0.42 leaves 15.75 GiB to programs.
    Chip("v5e", ("TPU v5 lite", "TPU v5e"), int(15.75 * GiB), 197e12, 819e9, "cloud.google.com/tpu/docs/v5e"),
    # cloud.google.com/tpu/docs/v5p: 459 TFLOPs bf16, 95 GB HBM2e at 2765 GBps per chip, 4 chips per host.
    # JAX reports the v5p as "TPU v5" (no suffix): matched exactly below, after the longer v5e kinds.
    Chip("v5p", ("TPU v5p", "TPU v5"), 95 * GiB, 459e12, 2765e9, "cloud.google.com/tpu/docs/v5p"),
    # cloud.google.com/tpu/docs/v6e (Trillium): 918 TFLOPs bf16, 32 GB HBM at 1638 GBps per chip, 8 chips per host;
    # libtpu 0.0.42 leaves 31.25 GiB to programs.
    Chip("v6e", ("TPU v6 lite", "TPU v6e", "TPU v6"), int(31.25 * GiB), 918e12, 1638e9,
         "cloud.google.com/tpu/docs/v6e"),
    # nvidia.com/en-us/data-center/h100 (SXM): 989 TFLOPS dense bf16, 80 GB HBM3 at 3.35 TB/s; memory as the driver
    # reports it (79.1 GiB).
    Chip("h100", ("H100",), 84942979072, 989e12, 3.35e12, "NVIDIA H100 datasheet (SXM)"),
    # nvidia.com/en-us/data-center/h200: 989 TFLOPS dense bf16, 141 GB HBM3e at 4.8 TB/s; memory as the driver
    # reports it (140.4 GiB).
    Chip("h200", ("H200",), 150754820096, 989e12, 4.8e12, "NVIDIA H200 datasheet (SXM)"),
    # nvidia.com/en-us/data-center/a100: 312 TFLOPS dense bf16, 80 GB HBM2e at 2.04 TB/s (SXM 80GB).
    Chip("a100", ("A100",), 80 * 10**9, 312e12, 2.039e12, "NVIDIA A100 datasheet (SXM 80GB)"),
    # nvidia.com/en-us/data-center/l40s: 362 TFLOPS dense bf16, 48 GB GDDR6 at 864 GB/s.
    Chip("l40s", ("L40S",), 48 * 10**9, 362e12, 864e9, "NVIDIA L40S datasheet"),
    # aws.amazon.com/ec2/instance-types/g5 (A10G): 70 TFLOPS dense bf16, 24 GB GDDR6 at 600 GB/s.
    Chip("a10g", ("A10G",), 24 * 10**9, 70e12, 600e9, "NVIDIA A10G (AWS g5) datasheet"),
)


def chip_for_kind(device_kind: str) -> Chip | None:
  """The chip whose kind names `device_kind` (e.g. "TPU v5 lite" -> v5e, "TPU v5" -> v5p), or None."""
  kind = device_kind.lower().strip()
  pairs = sorted(((k.lower(), chip) for chip in CHIPS for k in chip.kinds), key=lambda p: -len(p[0]))
  for key, chip in pairs:
    # "TPU v5" must not claim "TPU v5 lite": a key ending a word boundary short of the kind matches only exactly.
    if kind == key or (key in kind and not kind.startswith(key + " ")):
      return chip
  return None


def chip_by_name(name: str) -> Chip | None:
  """The chip called `name` ("v5p", "h100", ...), or None."""
  return next((c for c in CHIPS if c.name == name.lower()), None)


def devices_per_chip(devices: Sequence[Any]) -> int:
  """How many JAX devices share one chip (2 for TPU v4 compiled per TensorCore, else 1), from the devices'
  `coords` (chips) and `core_on_chip` (cores) where they have them."""
  cores = {getattr(d, "core_on_chip", 0) for d in devices}
  return max(len(cores), 1)
