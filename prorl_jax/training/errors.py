"""The error a training run stops with when it cannot continue."""


class TrainingError(RuntimeError):
  """A run that cannot continue; the message says why and what to change."""
