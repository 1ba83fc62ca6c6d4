"""The ProRLv2 algorithm core: advantages, policy loss, aggregation, KL, log-probs, dynamic sampling, length
shaping, reference reset and pass@k; the 2026 policy objectives (GSPO, CISPO, SAPO, GMPO, KL-Cov, Clip-Cov) and
rollout correction (TIS / ICE-POP). Pure, jit-able functions (host-side helpers are marked as such), checked
against independent numpy references and against verl 0.9.1 (`benchmarks/verl_parity.py`).

This package imports nothing else from prorl_jax.
"""

from prorl_jax.algorithms.advantages import compute_advantages
from prorl_jax.algorithms.advantages import discounted_returns
from prorl_jax.algorithms.advantages import ESTIMATORS as ADVANTAGE_ESTIMATORS
from prorl_jax.algorithms.advantages import grpo_advantages
from prorl_jax.algorithms.advantages import outcome_to_token_rewards
from prorl_jax.algorithms.advantages import pass_at_k_advantages
from prorl_jax.algorithms.advantages import reinforce_pp_advantages
from prorl_jax.algorithms.advantages import reinforce_pp_baseline_advantages
from prorl_jax.algorithms.advantages import rloo_advantages
from prorl_jax.algorithms.aggregation import AGG_MODES
from prorl_jax.algorithms.aggregation import agg_loss
from prorl_jax.algorithms.aggregation import global_counts
from prorl_jax.algorithms.dynamic_sampling import FILTER_METRICS, KEEP_RULES, dynamic_sampling_keep
from prorl_jax.algorithms.dynamic_sampling import DynamicSamplingAccumulator
from prorl_jax.algorithms.dynamic_sampling import DynamicSamplingError
from prorl_jax.algorithms.kl import ESTIMATORS as KL_ESTIMATORS
from prorl_jax.algorithms.kl import NAMES as KL_NAMES
from prorl_jax.algorithms.kl import KL_CONVENTIONS
from prorl_jax.algorithms.kl import kl_in_reward
from prorl_jax.algorithms.kl import kl_penalty
from prorl_jax.algorithms.length_shaping import cosine_length_penalty
from prorl_jax.algorithms.length_shaping import length_penalty_active
from prorl_jax.algorithms.length_shaping import LengthShapingConfig
from prorl_jax.algorithms.length_shaping import overlong_penalty
from prorl_jax.algorithms.length_shaping import shape_rewards
from prorl_jax.algorithms.length_shaping import stop_properly_shaping
from prorl_jax.algorithms.logprobs import token_logprobs_from_hidden
from prorl_jax.algorithms.logprobs import token_logprobs_from_logits
from prorl_jax.algorithms.masked import masked_mean
from prorl_jax.algorithms.masked import masked_sum
from prorl_jax.algorithms.masked import masked_var
from prorl_jax.algorithms.masked import masked_whiten
from prorl_jax.algorithms.pass_at_k import mean_pass_at_k
from prorl_jax.algorithms.pass_at_k import pass_at_k
from prorl_jax.algorithms.policy_loss import policy_loss
from prorl_jax.algorithms.policy_losses import clip_cov_loss
from prorl_jax.algorithms.policy_losses import cispo_loss
from prorl_jax.algorithms.policy_losses import gmpo_loss
from prorl_jax.algorithms.policy_losses import gspo_loss
from prorl_jax.algorithms.policy_losses import kl_cov_loss
from prorl_jax.algorithms.policy_losses import sapo_loss
from prorl_jax.algorithms.rollout_correction import LEVELS as ROLLOUT_CORRECTION_LEVELS
from prorl_jax.algorithms.rollout_correction import parse_threshold as parse_rollout_threshold
from prorl_jax.algorithms.rollout_correction import rollout_correction_weights
from prorl_jax.algorithms.rollout_correction import rollout_mismatch_metrics
from prorl_jax.algorithms.reference_reset import reset_decision
from prorl_jax.algorithms.reference_reset import reset_reference
from prorl_jax.algorithms.reference_reset import ResetPolicy
from prorl_jax.algorithms.reference_reset import ResetTrackerState

# `algorithm.policy_loss` names (verl's loss modes; "gmpo" is verl's "geo_mean").
POLICY_LOSSES = ("vanilla", "gspo", "cispo", "sapo", "gmpo", "kl_cov", "clip_cov")

__all__ = [
    "ADVANTAGE_ESTIMATORS", "AGG_MODES", "DynamicSamplingAccumulator", "DynamicSamplingError", "FILTER_METRICS",
    "KEEP_RULES", "KL_CONVENTIONS", "KL_ESTIMATORS", "KL_NAMES", "LengthShapingConfig", "POLICY_LOSSES",
    "ROLLOUT_CORRECTION_LEVELS", "ResetPolicy", "ResetTrackerState", "agg_loss", "cispo_loss", "clip_cov_loss",
    "compute_advantages", "cosine_length_penalty", "discounted_returns", "dynamic_sampling_keep", "global_counts",
    "gmpo_loss", "grpo_advantages", "gspo_loss", "kl_cov_loss", "kl_in_reward", "kl_penalty", "length_penalty_active",
    "masked_mean", "masked_sum", "masked_var", "masked_whiten", "mean_pass_at_k", "outcome_to_token_rewards",
    "parse_rollout_threshold", "overlong_penalty", "pass_at_k", "pass_at_k_advantages", "policy_loss",
    "reinforce_pp_advantages", "reinforce_pp_baseline_advantages", "reset_decision", "reset_reference",
    "rloo_advantages", "rollout_correction_weights", "rollout_mismatch_metrics", "sapo_loss", "shape_rewards",
    "stop_properly_shaping", "token_logprobs_from_hidden", "token_logprobs_from_logits",
]
