"""ProRL's claims tested by ablation on the chain suite (issue 21; `prorl_jax.study` documents the fields):

  python -m experiments.study --config=experiments/configs/study_prorl_claims.py --workdir=runs/study

Variants of the base config (experiments/configs/chain.py, every ProRLv2 component on):
  prorlv2              everything on
  no_reset             no reference resets
  symmetric_clip       clip_high = clip_low = 0.2 (no decoupled clipping)
  no_dynamic_sampling  every generated group trains, zero-variance ones too (gen_prompts = prompts: no oversampling)
  no_kl                no KL loss (and so nothing for resets to refresh)
  grpo_v1              ProRL v1's settings: GRPO advantages, clip 0.2 / 0.4, k3 KL, resets on stalled validation
                       with the optimizer re-initialised, no length penalty
The step checkpoints of `prorlv2` give the shorter and longer horizons. To run the same study on an accelerator with a
bigger model, point `base` at another training config (and `claims.easy` / `claims.hard` at its benchmarks).
"""

import ml_collections

from prorl_jax.study import study_config


def get_config():
  s = study_config()
  s.base = "chain.py"
  s.overrides = ("checkpoint.keep_latest=8", "checkpoint.export_hf=False")
  s.variants = ml_collections.ConfigDict(dict(
      prorlv2=(),
      no_reset=("reference_reset.every_k_steps=0",),
      symmetric_clip=("algorithm.clip_high=0.2",),
      no_dynamic_sampling=("dynamic_sampling.enable=False", "batch.gen_prompts=16"),
      no_kl=("algorithm.kl_coef=0.0", "reference_reset.every_k_steps=0"),
      grpo_v1=("algorithm.advantage=grpo", "algorithm.clip_high=0.4", "algorithm.kl_estimator=k3",
               "algorithm.kl_input_clamp=0.0", "length_penalty.cosine_enable=False",
               "reference_reset.every_k_steps=0", "reference_reset.patience=3",
               "reference_reset.reset_optimizer=True"),
  ))
  s.seeds = (0, 1)
  s.parallel = 1
  s.eval.steps = (0, 24, 48)
  s.eval.variants = "prorlv2"
  s.eval.benchmarks = "embedded:chain?levels=1-8&size=192"
  s.eval.num_samples = 64
  s.eval.temperature = 0.6  # ProRL's evaluation sampling (P1 §3.4)
  s.eval.top_p = 0.95
  s.eval.batch_prompts = 32
  s.claims.easy = "chain/L1,chain/L2,chain/L3"
  s.claims.hard = "chain/L5,chain/L6"
  s.claims.min_effect = 0.02
  s.smoke.variants = "prorlv2,no_reset"
  s.smoke.seeds = (0,)
  s.smoke.overrides = ("total_steps=4", "eval_every=4", "checkpoint_every=2", "batch.prompts=8",
                       "batch.gen_prompts=8", "batch.mini_batch_prompts=8", "rollout.n=4",
                       "data.validation=embedded:chain?levels=1-8&size=16", "reference_reset.every_k_steps=2")
  s.smoke.eval_steps = (0, 4)
  s.smoke.eval_limit = 16
  s.smoke.eval_num_samples = 4
  s.smoke.parallel = 2
  return s
