"""Kernels for prorl_jax, standalone (nothing here imports prorl_jax).

`decode_attention`: ragged grouped-query decode attention (flash-decoding) with Triton (GPU) and Mosaic (TPU)
kernels, a plain-jnp reference, and a dispatcher that says which one it picked.
`column_matmul` and `column_attention`: the CPU decode step's `weights [out, in] @ activations [in, batch]` and its
attention over a column-layout KV cache, by native AVX-512 XLA FFI kernels built on first use (`cpu_native`), else
their XLA references; `native_status` says which.
"""

from kernels.column_attention import column_attention, column_attention_reference
from kernels.column_matmul import column_matmul, column_matmul_reference
from kernels.cpu_native import native_status
from kernels.decode_attention import combine_splits, decode_attention
from kernels.decode_attention_reference import decode_attention_reference
from kernels.decode_attention_select import (IMPLS, KernelCase, KernelChoice, sampler_kernel_cases, select_impl,
                                             target_platform)

__all__ = ["IMPLS", "KernelCase", "KernelChoice", "column_attention", "column_attention_reference", "column_matmul",
           "column_matmul_reference", "combine_splits", "decode_attention", "decode_attention_reference",
           "native_status", "sampler_kernel_cases", "select_impl", "target_platform"]
