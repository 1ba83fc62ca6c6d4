"""Unbiased pass@k estimator (Chen et al. 2021, arXiv 2107.03374), numerically stable.

pass@k = 1 - C(n - c, k) / C(n, k) for n samples of which c are correct, evaluated as the product
1 - prod_{i = n - c + 1}^{n} (1 - k / i), which never forms the huge binomials; it is exactly 1 when n - c < k.
"""

from __future__ import annotations

import numpy as np


def _check_int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"`{name}` must be an int; got {value!r}.")
  return int(value)


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k for one problem: n samples, c correct, k drawn (1 <= k <= n, 0 <= c <= n)."""
  n, c, k = _check_int("n", n), _check_int("c", c), _check_int("k", k)
  if n < 1:
    raise ValueError(f"`n` (samples per problem) must be >= 1; got {n}.")
  if not 0 <= c <= n:
    raise ValueError(f"`c` (correct samples) must be in [0, n={n}]; got {c}.")
  if not 1 <= k <= n:
    raise ValueError(f"`k` must be in [1, n={n}] (cannot estimate pass@k from fewer than k samples); got {k}.")
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def mean_pass_at_k(num_samples, num_correct, k: int) -> float:
  """pass@k averaged over problems; `num_samples` and `num_correct` are `[P]` integer arrays (or an int n)."""
  correct = np.asarray(num_correct).reshape(-1)
  samples = np.broadcast_to(np.asarray(num_samples), correct.shape)
  if correct.size == 0:
    raise ValueError("`num_correct` is empty; need at least one problem.")
  return float(np.mean([pass_at_k(int(n), int(c), k) for n, c in zip(samples, correct)]))
