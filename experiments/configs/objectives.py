"""The embedded default with each of the 2026 policy objectives and rollout correction switched on (verl 0.9.1's
parameters; ALGORITHMS.md §17). Pick one with a config argument:

  python -m experiments.prorlv2 --config=experiments/configs/objectives.py:gspo --workdir=runs/tiny_gspo

Names: gspo, cispo, sapo, gmpo, kl_cov, clip_cov, pass_at_k (the pass@k training advantage), icepop (PPO-clip with
token-level ICE-POP rollout correction [0.5, 5.0], as NVIDIA's ProRLv2 recipes), tis (sequence-level TIS at 2.0).
The clip ranges are the papers' where they differ from PPO's: GSPO's ratio is a per-sequence geometric mean, so its
range is ~1e3 times narrower (the paper: 3e-4 / 4e-4); GMPO clips log-ratios at +-0.4.
"""

from experiments.configs import tiny

PRESETS = {
    "gspo": dict(policy_loss="gspo", clip_low=3e-4, clip_high=4e-4, loss_agg="seq-mean-token-mean"),
    "cispo": dict(policy_loss="cispo", clip_low=1.0 - 1e-6, clip_high=0.28),  # CISPO: no lower clip in practice
    "sapo": dict(policy_loss="sapo", tau_pos=1.0, tau_neg=1.05),
    "gmpo": dict(policy_loss="gmpo", clip_low=0.4, clip_high=0.4),
    "kl_cov": dict(policy_loss="kl_cov", kl_cov_ratio=0.0002, ppo_kl_coef=0.1),
    "clip_cov": dict(policy_loss="clip_cov", clip_cov_ratio=0.0002, clip_cov_lb=1.0, clip_cov_ub=5.0),
    "pass_at_k": dict(advantage="pass_at_k"),
    "icepop": dict(rollout_correction=dict(level="token", threshold=(0.5, 5.0))),
    "tis": dict(rollout_correction=dict(level="sequence", threshold=(2.0,))),
}


def get_config(name: str = "gspo"):
  if name not in PRESETS:
    raise ValueError(f"unknown objective preset {name!r}; choose one of {sorted(PRESETS)}")
  c = tiny.get_config()
  for key, value in PRESETS[name].items():
    if isinstance(value, dict):
      for sub, v in value.items():
        c.algorithm[key][sub] = v
    else:
      c.algorithm[key] = value
  return c
