"""prorl_jax: ProRLv2 prolonged reinforcement learning for LLM reasoning, in JAX/Flax."""

import pathlib

from setuptools import find_packages, setup

_HERE = pathlib.Path(__file__).parent


def _requirements(name):
  lines = (_HERE / name).read_text().splitlines()
  return [l.split("#")[0].strip() for l in lines if l.split("#")[0].strip()]


setup(
    name="prorl_jax",
    version="0.1.0",
    description="ProRLv2 (prolonged RL for reasoning LLMs) in JAX/Flax",
    long_description=(_HERE / "README.md").read_text() if (_HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["prorl_jax", "prorl_jax.*", "kernels", "kernels.*",
                                    "experiments", "experiments.*"]),
    # Data by explicit globs only: include_package_data would treat assets/ folders as packages and warn at install.
    package_data={"prorl_jax": ["assets/**/*"], "kernels": ["*.cc"]},  # the native decode matmul is built on use
    install_requires=_requirements("requirements.txt"),
    # torch is only a numerical oracle for tests; install the pinned CPU wheel first.
    extras_require={"test": _requirements("requirements-test.txt"),
                    # Deviceless compilers for `experiments.plan`: TPU (libtpu) and NVIDIA GPU (the CUDA plugin).
                    "tpu-aot": _requirements("requirements-tpu-aot.txt"),
                    "gpu-aot": _requirements("requirements-gpu-aot.txt")},
)
