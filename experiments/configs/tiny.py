"""The embedded default: a 0.44M-parameter Qwen2 on the tiny task suite (math and Reasoning Gym arithmetic), on
2 CPU cores, with no download.

The model starts from `prorl_jax/assets/tiny` (a small tokenizer and a briefly warm-started checkpoint made by
`scripts/make_tiny_checkpoint.py`); every ProRLv2 component is on: REINFORCE++-baseline, decoupled clipping,
dynamic sampling, the k2 KL loss, periodic reference resets and the cosine length penalty cycling on and off.
"""

import os

from prorl_jax.training import default_config

TINY_CHECKPOINT = os.path.join(os.path.dirname(__file__), "..", "..", "prorl_jax", "assets", "tiny")


def get_config():
  c = default_config()
  c.seed = 0
  c.total_steps = 120
  c.eval_every = 20
  c.checkpoint_every = 20
  c.model.path = os.path.normpath(TINY_CHECKPOINT)
  c.model.param_dtype = "float32"
  c.model.compute_dtype = "float32"
  c.data.train = "embedded:tiny?size=1600"
  c.data.validation = "embedded:tiny?size=240"
  c.data.validation_split = "validation"
  c.data.max_prompt_length = 64
  c.rollout.n = 4
  c.rollout.temperature = 1.0
  c.rollout.max_new_tokens = 16
  c.batch.prompts = 64
  c.batch.gen_prompts = 96
  c.batch.mini_batch_prompts = 32
  c.algorithm.kl_coef = 1e-3
  c.optimizer.lr = 5e-4
  c.optimizer.weight_decay = 0.0
  c.dynamic_sampling.max_gen_batches = 8
  c.length_penalty.cosine_eta_min = -0.1
  c.length_penalty.cosine_eta_max = 0.0
  c.length_penalty.cosine_on_steps = 20
  c.length_penalty.cosine_off_steps = 20
  c.reference_reset.every_k_steps = 50
  c.eval.num_samples = 4
  c.eval.batch_prompts = 240
  c.rewards.num_workers = 2
  return c
