"""prorl_jax: ProRLv2 in JAX (README.md)."""

from prorl_jax.platform_env import quiet_tpu_probe as _quiet_tpu_probe

# With libtpu installed (for planning) on a machine without TPUs, JAX's start-up would probe for one and print
# warnings in every process that imports us; a TPU host is left alone.
_quiet_tpu_probe()
