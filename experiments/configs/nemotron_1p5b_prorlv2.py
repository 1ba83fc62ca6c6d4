"""ProRLv2 on nvidia/Nemotron-Research-Reasoning-Qwen-1.5B (ALGORITHMS.md §1, §3).

REINFORCE++-baseline advantages, PPO with decoupled clip 0.2 / 0.28 and token-level ICE-POP rollout correction
[0.5, 5.0] (as NVIDIA's NeMo-RL recipe), k2 KL loss (log-ratio clamped to ±10,
beta 1e-4 as in the NVIDIA NeMo-RL/OpenRLHF recipes), dynamic sampling (drop groups with all-equal rewards, refill
from up to 10 generation batches of 1.5x the batch), reference resets every 300 steps keeping the optimizer
state, and the cosine length penalty switched on for 100 steps and off for 500. Values the sources leave open
([UNCONFIRMED] in ALGORITHMS.md: beta, the cosine end points, rollout temperature, lr) follow those recipes.
Data: ProRL's five training domains. Needs accelerators: run with e.g. --config.mesh.fsdp=-1 on a GPU/TPU host.
"""

from prorl_jax.training import default_config


def get_config():
  c = default_config()
  c.seed = 0
  c.total_steps = 3000
  c.eval_every = 50
  c.checkpoint_every = 50
  c.model.path = "nvidia/Nemotron-Research-Reasoning-Qwen-1.5B"
  c.model.param_dtype = "float32"
  c.model.compute_dtype = "bfloat16"
  c.model.ref_param_dtype = "bfloat16"
  c.model.rollout_param_dtype = "bfloat16"
  c.model.remat = True
  c.data.train = ("source:deepscaler;source:eurus2_code;source:scp116k;source:reasoning_gym;"
                  "source:ifeval_train")
  c.data.validation = ("benchmark:aime2024;benchmark:gpqa_diamond;benchmark:ifeval;"
                       "benchmark:reasoning_gym?limit=200")
  c.data.max_prompt_length = 1024
  c.rollout.n = 16
  c.rollout.temperature = 1.0
  c.rollout.max_new_tokens = 8192
  c.batch.prompts = 256
  c.batch.gen_prompts = 384
  c.batch.mini_batch_prompts = 64
  c.batch.micro_batch_size = 16
  c.algorithm.advantage = "reinforce_plus_plus_baseline"
  c.algorithm.clip_low = 0.2
  # 0.28 as the ProRLv2 write-up states (N2 §2); NVIDIA's shipped NeMo-RL and OpenRLHF recipes use 0.27.
  c.algorithm.clip_high = 0.28
  # Sampling runs on a bfloat16 copy while the trainer scores in float32: correct for the mismatch as NVIDIA's
  # recipes do (token-level ICE-POP, weights outside [0.5, 5.0] zeroed).
  c.algorithm.rollout_correction.level = "token"
  c.algorithm.rollout_correction.threshold = (0.5, 5.0)
  c.algorithm.loss_agg = "token-mean"
  c.algorithm.kl_coef = 1e-4
  c.algorithm.kl_estimator = "k2"
  c.algorithm.kl_input_clamp = 10.0
  c.dynamic_sampling.enable = True
  c.dynamic_sampling.max_gen_batches = 10
  c.length_penalty.cosine_enable = True
  c.length_penalty.cosine_on_steps = 100
  c.length_penalty.cosine_off_steps = 500
  c.reference_reset.every_k_steps = 300
  c.reference_reset.reset_optimizer = False
  c.optimizer.lr = 1e-6
  c.optimizer.weight_decay = 0.01
  c.optimizer.grad_clip = 1.0
  c.eval.num_samples = 16
  c.eval.temperature = 0.6
  c.eval.top_p = 0.95
  c.eval.benchmarks = ("benchmark:aime2024;benchmark:aime2025;benchmark:amc;benchmark:math500;benchmark:minerva;"
                       "benchmark:olympiadbench;benchmark:gpqa_diamond;benchmark:ifeval;benchmark:humaneval_plus;"
                       "benchmark:livecodebench;benchmark:reasoning_gym")
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.tensor = 1
  return c
