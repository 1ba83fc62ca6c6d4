"""ProRL v1's settings (P1 §2-3, App. E; ALGORITHMS.md §1-2) from DeepSeek-R1-Distill-Qwen-1.5B.

GRPO advantages, PPO with decoupled clip 0.2 / 0.4, a KL loss to the reference (verl's default low_var_kl = k3;
beta and estimator are [UNCONFIRMED] in the paper), dynamic sampling dropping prompts with accuracy 0 or 1,
hard reference resets with optimizer re-initialisation when validation stalls (patience 3 evaluations), rollout
temperature 1.2, 16 samples, batch 256 prompts with mini-batches of 64 (4 updates per step), AdamW at a constant
2e-6, 8k responses, no length penalty.
"""

from prorl_jax.training import default_config


def get_config():
  c = default_config()
  c.seed = 0
  c.total_steps = 2000
  c.eval_every = 50
  c.checkpoint_every = 50
  c.model.path = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
  c.model.param_dtype = "float32"
  c.model.compute_dtype = "bfloat16"
  c.model.ref_param_dtype = "bfloat16"
  c.model.rollout_param_dtype = "bfloat16"
  c.model.remat = True
  c.data.train = "source:deepscaler;source:eurus2_code;source:scp116k;source:reasoning_gym;source:ifeval_train"
  c.data.validation = ("benchmark:aime2024;benchmark:gpqa_diamond;benchmark:ifeval;"
                       "benchmark:reasoning_gym?tasks=graph_color&limit=100")
  c.data.max_prompt_length = 1024
  c.rollout.n = 16
  c.rollout.temperature = 1.2
  c.rollout.max_new_tokens = 8192
  c.batch.prompts = 256
  c.batch.gen_prompts = 384
  c.batch.mini_batch_prompts = 64
  c.batch.micro_batch_size = 16
  c.algorithm.advantage = "grpo"
  c.algorithm.clip_low = 0.2
  c.algorithm.clip_high = 0.4
  c.algorithm.loss_agg = "token-mean"
  c.algorithm.kl_coef = 1e-3
  c.algorithm.kl_estimator = "k3"
  c.algorithm.kl_input_clamp = 0.0  # verl's defaults for k3: input ±20, output ±10
  c.dynamic_sampling.enable = True
  c.length_penalty.cosine_enable = False
  c.reference_reset.every_k_steps = 0
  c.reference_reset.patience = 3
  c.reference_reset.reset_optimizer = True
  c.optimizer.lr = 2e-6
  c.optimizer.weight_decay = 0.01
  c.optimizer.grad_clip = 1.0
  c.eval.num_samples = 16
  c.eval.temperature = 0.6
  c.eval.top_p = 0.95
  c.mesh.fsdp = -1
  return c
