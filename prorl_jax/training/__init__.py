"""The ProRLv2 training loop and its parts: config schema, state, the update engine (`update`), experience
collection, the layout on devices (`layout`, shared with the planner), what differs between host processes
(`multihost`), the memory model (`memory`), checkpoints, logs, and checkpoint evaluation (`evaluate`).

Entry points: `train(config, workdir)` (what `python -m experiments.prorlv2` runs) and
`evaluate.run_evaluation(config, checkpoints, workdir)` (what `python -m experiments.evaluate` runs).
"""

from prorl_jax.training.checkpointing import CheckpointWriteError, UnusableCheckpointError
from prorl_jax.training.config import default_config, validate
from prorl_jax.training.preemption import EXIT_PREEMPTED, Preempted
from prorl_jax.training.state import TrainState, create_train_state, make_optimizer
from prorl_jax.training.trainer import Trainer, TrainingError, train

__all__ = ["CheckpointWriteError", "EXIT_PREEMPTED", "Preempted", "TrainState", "Trainer", "TrainingError",
           "UnusableCheckpointError", "create_train_state", "default_config", "make_optimizer", "train", "validate"]
