"""Pallas kernels for prorl_jax, standalone (nothing here imports prorl_jax).

`decode_attention`: ragged grouped-query decode attention (flash-decoding) with Triton (GPU) and Mosaic (TPU)
kernels, a plain-jnp reference, and a dispatcher that says which one it picked.
"""

from kernels.decode_attention import combine_splits, decode_attention
from kernels.decode_attention_reference import decode_attention_reference
from kernels.decode_attention_select import IMPLS, KernelCase, KernelChoice, sampler_kernel_cases, select_impl

__all__ = ["IMPLS", "KernelCase", "KernelChoice", "combine_splits", "decode_attention",
           "decode_attention_reference", "sampler_kernel_cases", "select_impl"]
