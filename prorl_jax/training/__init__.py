"""The ProRLv2 training loop and its parts (config schema, state, update step, experience, checkpoints, logs).

Entry point: `train(config, workdir)` (what `python -m experiments.prorlv2` runs).
"""

from prorl_jax.training.config import default_config, validate
from prorl_jax.training.state import TrainState, create_train_state, make_optimizer
from prorl_jax.training.trainer import Trainer, TrainingError, train

__all__ = ["TrainState", "Trainer", "TrainingError", "create_train_state", "default_config", "make_optimizer", "train",
           "validate"]
