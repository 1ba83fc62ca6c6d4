"""Errors that several packages raise, kept apart so that none of them imports another for an exception type.

`ConfigError` is bad input the user can fix (a config field, a config.json, a mesh or topology): entry points turn
it into one line and exit code 2.
"""


class ConfigError(ValueError):
  """A config.json or config field that prorl_jax cannot use; the message names the field and the fix."""
