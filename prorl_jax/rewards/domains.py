"""The reward domains and where their verifiers live; what counts as solved. No imports: worker processes and
every package that names a domain read this without loading a verifier."""

from __future__ import annotations

from typing import Mapping

DOMAINS: dict[str, str] = {  # name -> "module:function", f(response, ground_truth) -> float
    "math": "prorl_jax.rewards.math_reward:score_math",
    "code": "prorl_jax.rewards.code_reward:score_code",
    "logic": "prorl_jax.rewards.logic_reward:score_logic",
    "stem": "prorl_jax.rewards.stem_reward:score_stem",
    "ifeval": "prorl_jax.rewards.ifeval_reward:score_ifeval",
}
DOMAIN_NAMES: tuple[str, ...] = tuple(DOMAINS)

# A response counts as solved (pass@k, the solve-all / solve-none filter) when its score reaches this: full credit on
# continuous rewards, with room for float rounding.
SOLVED_THRESHOLD = 1.0 - 1e-6


def domain_function(domain: str, domains: Mapping[str, str] = DOMAINS) -> str:
  """'module:function' path of a domain's verifier; ValueError listing the known domains otherwise."""
  if not isinstance(domain, str) or domain not in domains:
    raise ValueError(f"unknown reward domain {domain!r}; known domains: {', '.join(sorted(domains))}")
  return domains[domain]
