"""The chain suite on 2 CPU cores: a small Qwen2 warm-started on arithmetic chains of 1-3 steps
(`prorl_jax/assets/chain`, made by `scripts/make_tiny_checkpoint.py --suite=chain`), trained by RL on chains of
1-6 steps with every ProRLv2 component on. Levels 7-8 are never trained on; validation covers levels 1-8, so the
curves show where RL moves what the model can solve (the base config of `study_prorl_claims.py`).

  python -m experiments.prorlv2 --config=experiments/configs/chain.py --workdir=runs/chain
"""

import os

from prorl_jax.training import default_config

CHAIN_CHECKPOINT = os.path.join(os.path.dirname(__file__), "..", "..", "prorl_jax", "assets", "chain")


def get_config():
  c = default_config()
  c.seed = 0
  c.total_steps = 48
  c.eval_every = 8
  c.checkpoint_every = 8
  c.model.path = os.path.normpath(CHAIN_CHECKPOINT)
  c.model.param_dtype = "float32"
  c.model.compute_dtype = "float32"
  c.data.train = "embedded:chain?levels=1-6&size=2000"
  c.data.validation = "embedded:chain?levels=1-8&size=128"
  c.data.validation_split = "validation"
  c.data.max_prompt_length = 48
  c.rollout.n = 8
  c.rollout.temperature = 1.0
  c.rollout.max_new_tokens = 80  # level 8's worked answer is ~70 tokens
  c.batch.prompts = 16
  c.batch.gen_prompts = 32
  c.batch.mini_batch_prompts = 8  # two updates per step: the clip acts
  c.algorithm.kl_coef = 1e-3
  c.optimizer.lr = 3e-4
  c.optimizer.weight_decay = 0.0
  c.dynamic_sampling.max_gen_batches = 8
  c.length_penalty.cosine_eta_min = -0.1
  c.length_penalty.cosine_eta_max = 0.0
  c.length_penalty.cosine_on_steps = 12
  c.length_penalty.cosine_off_steps = 12
  c.reference_reset.every_k_steps = 12
  c.eval.num_samples = 4
  c.eval.batch_prompts = 128
  c.rewards.num_workers = 2
  return c
