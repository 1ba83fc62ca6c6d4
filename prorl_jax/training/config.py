"""The trainer's config schema (ml_collections) and its validation.

`default_config()` holds every field with its default; config files start from it and change values. The dict
is locked, so a misspelt field in a file or on the command line (`--config.rollout.tempreature=1`) fails at start.
`validate(config)` then checks values and raises `ConfigError` naming the field and the fix.
"""

from __future__ import annotations

import ml_collections

from prorl_jax import algorithms
from prorl_jax import rollout as rollout_lib
from prorl_jax.errors import ConfigError

_DTYPES = ("float32", "bfloat16")


def default_config() -> ml_collections.ConfigDict:
  """ProRLv2 defaults (ALGORITHMS.md §1, §3); values marked [UNCONFIRMED] there are our choices."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.eval_every = 50  # steps between validation runs (0: only at the start and the end)
  c.checkpoint_every = 50
  c.log_every = 1

  c.model = ml_collections.ConfigDict(dict(
      path="nvidia/Nemotron-Research-Reasoning-Qwen-1.5B",  # local HF directory or hub id
      revision="",  # hub revision, e.g. "v2"
      param_dtype="float32",
      compute_dtype="bfloat16",
      ref_param_dtype="float32",  # "bfloat16" halves the reference copy's memory
      rollout_param_dtype="",  # "" = the params' dtype; "bfloat16" samples from a bf16 copy
      remat=False,
      attention_impl="auto",
  ))
  c.tokenizer = ml_collections.ConfigDict(dict(
      path="",  # "" = model.path
      chat_template="",  # "" = the tokenizer's own
      system_prompt="",
  ))
  c.data = ml_collections.ConfigDict(dict(
      train="",  # a dataset spec (prorl_jax/data/specs.py); ";" joins several into a mixture
      train_split="train",
      validation="",
      validation_split="test",
      validation_size=0,  # 0 = all
      max_prompt_length=1024,
      overlong_prompts="filter",
      domains="",  # comma-separated filter, "" = all
  ))
  c.rollout = ml_collections.ConfigDict(dict(
      n=16,
      temperature=1.0,
      top_p=1.0,
      top_k=0,
      max_new_tokens=8192,
      memory_budget_gb=0.0,  # 0 = automatic
      batching="continuous",  # "continuous": finished rows' slots are refilled at once; "static": fixed chunks
  ))
  c.batch = ml_collections.ConfigDict(dict(
      prompts=256,  # prompts per training step (after dynamic sampling)
      gen_prompts=384,  # prompts per generation batch (oversampled for dynamic sampling; NeMo-RL 1.5x)
      mini_batch_prompts=64,  # prompts per optimizer update
      micro_batch_size=0,  # sequences per gradient micro-batch (0 = the whole mini-batch)
      logprob_micro_batch_size=0,  # sequences per log-prob forward (0 = micro_batch_size)
      # Micro-batches of similar-length rows, each cut to the widths its rows use, rounded up to this many buckets
      # per doubling of length (one compilation per bucket); 0 pads every row to the full length instead.
      length_buckets_per_octave=4,
      ppo_epochs=1,
  ))
  c.algorithm = ml_collections.ConfigDict(dict(
      advantage="reinforce_plus_plus_baseline",
      unbiased_whitening=True,
      clip_low=0.2,
      clip_high=0.28,
      clip_c=0.0,  # dual-clip constant (> 1); 0 = off
      loss_agg="token-mean",
      kl_coef=1e-4,
      kl_estimator="k2",
      kl_input_clamp=10.0,  # ProRLv2 blog: clamp the log-ratio to ±10; 0 = estimator default (verl)
      kl_output_clamp=0.0,  # 0 = estimator default (verl)
      entropy_coef=0.0,
      logprob_chunk_size=1024,  # tokens per LM-head chunk when computing log-probs
      # The policy objective (algorithms.POLICY_LOSSES): "vanilla" PPO-clip, or gspo, cispo, sapo, gmpo, kl_cov,
      # clip_cov (verl 0.9.1's; clip_low / clip_high are their ratio range, except sapo and kl_cov).
      policy_loss="vanilla",
      tau_pos=1.0,  # sapo: gate temperature where A > 0
      tau_neg=1.05,  # sapo: where A <= 0
      kl_cov_ratio=0.0002,  # kl_cov: share of tokens with the largest cov(logp, A) that get the |KL| penalty
      ppo_kl_coef=0.1,  # kl_cov: that penalty's coefficient
      clip_cov_ratio=0.0002,  # clip_cov: share of tokens whose gradient is cut ...
      clip_cov_lb=1.0,  # ... drawn from those with clip_cov_lb < cov(logp, A) < clip_cov_ub
      clip_cov_ub=5.0,
      # Importance weights pi_trainer / pi_rollout multiplied into the policy loss (TIS / ICE-POP, verl's
      # rollout correction). level: "" (off), "token" or "sequence"; threshold: (upper,) truncates at upper (TIS),
      # (lower, upper) zeroes weights outside (ICE-POP; NVIDIA's ProRLv2 recipes: token, (0.5, 5.0)).
      rollout_correction=ml_collections.ConfigDict(dict(level="", threshold=(0.5, 5.0))),
  ))
  c.dynamic_sampling = ml_collections.ConfigDict(dict(
      enable=True,
      rule="verl",  # "verl" (group std > 0) or "openrlhf" (group mean strictly inside (low, high))
      metric="score",  # "score" (verifier reward) or "reward" (after length shaping)
      max_gen_batches=10,  # <= 0 = unlimited
  ))
  c.length_penalty = ml_collections.ConfigDict(dict(
      cosine_enable=True,
      cosine_eta_min=-0.5,
      cosine_eta_max=0.0,
      cosine_coef=1.0,
      cosine_correctness_aware=False,
      cosine_on_steps=100,
      cosine_off_steps=500,
      cosine_offset=0,
      overlong_buffer_len=0,  # DAPO overlong penalty ramp (tokens); 0 = off
      overlong_penalty_factor=1.0,
      stop_properly_coef=-1.0,  # reward multiplier for truncated responses; < 0 = off
  ))
  c.reference_reset = ml_collections.ConfigDict(dict(
      every_k_steps=300,  # 0 = off
      patience=0,  # validation evaluations without improvement; 0 = off
      min_delta=0.0,
      kl_threshold=0.0,  # 0 = off
      min_steps_between_resets=0,
      reset_optimizer=False,  # v1: True, v2: False
      source="current",  # "current" params or the "best" checkpoint by validation score
  ))
  c.optimizer = ml_collections.ConfigDict(dict(
      lr=1e-6,
      warmup_steps=0,
      weight_decay=0.01,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      grad_clip=1.0,
  ))
  c.eval = ml_collections.ConfigDict(dict(
      num_samples=16,
      temperature=0.6,
      top_p=0.95,
      top_k=0,
      max_new_tokens=0,  # 0 = rollout.max_new_tokens
      batch_prompts=64,
      at_start=True,
      benchmarks="",  # ";"-separated dataset specs for experiments.evaluate ("" = data.validation)
  ))
  c.rewards = ml_collections.ConfigDict(dict(
      num_workers=0,  # 0 = CPU count
      timeout_s=30.0,
      code_timeout_s=5.0,
  ))
  c.checkpoint = ml_collections.ConfigDict(dict(
      keep_latest=2,
      keep_best=1,
      async_save=True,
      export_hf=True,  # write the final params as a Hugging Face checkpoint to workdir/final_hf
  ))
  c.mesh = ml_collections.ConfigDict(dict(
      data=1,
      fsdp=-1,  # -1 = the remaining devices
      tensor=1,
      devices=0,  # use the first N devices (0 = all); the axis sizes multiply to this
  ))
  c.distributed = ml_collections.ConfigDict(dict(
      initialize=False,  # call jax.distributed.initialize (also when JAX_COORDINATOR_ADDRESS is set)
      coordinator_address="",
      num_processes=0,
      process_id=-1,
  ))
  c.lock()
  return c


def _fail(field: str, problem: str, fix: str = "") -> None:
  raise ConfigError(f"config.{field} {problem}" + (f"; {fix}" if fix else ""))


def _positive(config, *fields):
  for field in fields:
    value = _get(config, field)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      _fail(field, f"must be a positive integer, got {value!r}")


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def check_known_fields(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict | None = None,
                       prefix: str = "") -> None:
  """Every field of `config` exists in the schema (for configs not built from `default_config()`)."""
  reference = default_config() if reference is None else reference
  for key, value in config.items():
    name = f"{prefix}{key}"
    if key not in reference:
      known = ", ".join(sorted(reference.keys()))
      _fail(name, "is not a known field", f"known fields{' of config.' + prefix[:-1] if prefix else ''}: {known}")
    if isinstance(value, ml_collections.ConfigDict):
      check_known_fields(value, reference[key], prefix=f"{name}.")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks field values; raises ConfigError naming the first bad field. Returns the config."""
  check_known_fields(config)
  _positive(config, "total_steps", "log_every", "rollout.n", "rollout.max_new_tokens", "batch.prompts",
            "batch.gen_prompts", "batch.mini_batch_prompts", "batch.ppo_epochs", "data.max_prompt_length",
            "eval.num_samples", "eval.batch_prompts")
  for field in ("eval_every", "checkpoint_every", "batch.micro_batch_size", "batch.logprob_micro_batch_size",
                "batch.length_buckets_per_octave", "reference_reset.every_k_steps", "reference_reset.patience",
                "optimizer.warmup_steps"):
    if _get(config, field) < 0:
      _fail(field, f"must be >= 0, got {_get(config, field)}")
  if not config.model.path:
    _fail("model.path", "is empty", "set a Hugging Face checkpoint directory or hub id")
  for field in ("model.param_dtype", "model.compute_dtype", "model.ref_param_dtype"):
    if _get(config, field) not in _DTYPES:
      _fail(field, f"must be one of {_DTYPES}, got {_get(config, field)!r}")
  if config.model.rollout_param_dtype not in ("",) + _DTYPES:
    _fail("model.rollout_param_dtype", f"must be '' or one of {_DTYPES}, got {config.model.rollout_param_dtype!r}")
  if not config.data.train:
    _fail("data.train", "is empty", "name a dataset: 'embedded:tiny', a .jsonl/.parquet path or a hub id")
  b = config.batch
  if b.mini_batch_prompts > b.prompts or b.prompts % b.mini_batch_prompts:
    _fail("batch.mini_batch_prompts", f"({b.mini_batch_prompts}) must divide batch.prompts ({b.prompts})")
  if b.gen_prompts < b.prompts and not config.dynamic_sampling.enable:
    _fail("batch.gen_prompts", f"({b.gen_prompts}) must be >= batch.prompts ({b.prompts}) without dynamic sampling")
  rows = b.mini_batch_prompts * config.rollout.n
  if b.micro_batch_size and rows % b.micro_batch_size:
    _fail("batch.micro_batch_size", f"({b.micro_batch_size}) must divide the mini-batch's "
          f"{b.mini_batch_prompts} prompts x {config.rollout.n} samples = {rows} sequences")
  step_rows = b.prompts * config.rollout.n
  if b.logprob_micro_batch_size and step_rows % b.logprob_micro_batch_size:
    _fail("batch.logprob_micro_batch_size", f"({b.logprob_micro_batch_size}) must divide the step's "
          f"{b.prompts} prompts x {config.rollout.n} samples = {step_rows} sequences")
  a = config.algorithm
  if a.advantage not in algorithms.ADVANTAGE_ESTIMATORS:
    _fail("algorithm.advantage", f"is {a.advantage!r}", f"choose one of {algorithms.ADVANTAGE_ESTIMATORS}")
  if a.advantage == "pass_at_k" and config.rollout.n < 2:
    _fail("algorithm.advantage", "is 'pass_at_k', which needs rollout.n >= 2 responses per prompt",
          f"raise rollout.n (now {config.rollout.n})")
  if a.policy_loss not in algorithms.POLICY_LOSSES:
    _fail("algorithm.policy_loss", f"is {a.policy_loss!r}", f"choose one of {algorithms.POLICY_LOSSES}")
  rc = a.rollout_correction
  if rc.level not in ("",) + algorithms.ROLLOUT_CORRECTION_LEVELS:
    _fail("algorithm.rollout_correction.level", f"is {rc.level!r}",
          f"choose '' (off) or one of {algorithms.ROLLOUT_CORRECTION_LEVELS}")
  try:
    rollout_threshold(c=config)
  except ValueError as e:
    _fail("algorithm.rollout_correction.threshold", f"is {tuple(rc.threshold)!r}: {e}",
          "give (upper,) to truncate (TIS) or (lower, upper) to mask outside (ICE-POP)")
  for field in ("tau_pos", "tau_neg", "kl_cov_ratio", "clip_cov_ratio"):
    if a[field] <= 0:
      _fail(f"algorithm.{field}", f"must be > 0, got {a[field]}")
  if a.clip_cov_lb >= a.clip_cov_ub:
    _fail("algorithm.clip_cov_lb", f"({a.clip_cov_lb}) must be < algorithm.clip_cov_ub ({a.clip_cov_ub})")
  if a.loss_agg not in algorithms.AGG_MODES:
    _fail("algorithm.loss_agg", f"is {a.loss_agg!r}", f"choose one of {algorithms.AGG_MODES}")
  if a.kl_estimator.rstrip("+") not in algorithms.KL_NAMES:
    _fail("algorithm.kl_estimator", f"is {a.kl_estimator!r}", f"choose one of {algorithms.KL_NAMES} (optionally with "
          "'+')")
  if not (0 < a.clip_low < 1) or a.clip_high <= 0:
    _fail("algorithm.clip_low/clip_high", f"must satisfy 0 < clip_low < 1 and clip_high > 0, got "
          f"{a.clip_low}, {a.clip_high}")
  if a.clip_c and a.clip_c <= 1:
    _fail("algorithm.clip_c", f"must be > 1 (or 0 to disable dual clipping), got {a.clip_c}")
  if config.rollout.batching not in rollout_lib.BATCHING:
    _fail("rollout.batching", f"is {config.rollout.batching!r}", f"choose one of {rollout_lib.BATCHING}")
  if config.rollout.temperature <= 0:
    _fail("rollout.temperature", f"must be > 0 for RL sampling, got {config.rollout.temperature}")
  if config.dynamic_sampling.rule not in algorithms.KEEP_RULES:
    _fail("dynamic_sampling.rule", f"is {config.dynamic_sampling.rule!r}", f"choose one of {algorithms.KEEP_RULES}")
  if config.dynamic_sampling.metric not in algorithms.FILTER_METRICS:
    _fail("dynamic_sampling.metric", f"is {config.dynamic_sampling.metric!r}",
          f"choose one of {algorithms.FILTER_METRICS}")
  if config.reference_reset.source not in ("current", "best"):
    _fail("reference_reset.source", f"is {config.reference_reset.source!r}", "choose 'current' or 'best'")
  if config.optimizer.lr <= 0:
    _fail("optimizer.lr", f"must be > 0, got {config.optimizer.lr}")
  if not 0 < config.eval.top_p <= 1 or not 0 < config.rollout.top_p <= 1:
    _fail("eval.top_p/rollout.top_p", "must be in (0, 1]")
  return config


def rollout_threshold(c) -> float | tuple[float, float]:
  """`algorithm.rollout_correction.threshold` as `algorithms.rollout_correction_weights` takes it: (upper,) -> upper
  (TIS), (lower, upper) -> the pair (ICE-POP). Raises ValueError for anything else."""
  values = tuple(float(v) for v in c.algorithm.rollout_correction.threshold)
  threshold = values[0] if len(values) == 1 else values
  algorithms.parse_rollout_threshold(threshold)
  return threshold


def reset_policy(c) -> algorithms.ResetPolicy:
  """`config.reference_reset` as the algorithm core's ResetPolicy."""
  r = c.reference_reset
  return algorithms.ResetPolicy(every_k_steps=r.every_k_steps or None, patience=r.patience or None,
                                min_delta=r.min_delta, kl_threshold=r.kl_threshold or None,
                                min_steps_between_resets=r.min_steps_between_resets,
                                reset_optimizer=r.reset_optimizer)


def length_shaping(c) -> algorithms.LengthShapingConfig:
  """`config.length_penalty` (with the rollout length) as the algorithm core's LengthShapingConfig."""
  lp, r = c.length_penalty, c.rollout
  return algorithms.LengthShapingConfig(
      cosine_max_len=r.max_new_tokens if lp.cosine_enable else 0, cosine_eta_min=lp.cosine_eta_min,
      cosine_eta_max=lp.cosine_eta_max, cosine_coef=lp.cosine_coef,
      cosine_correctness_aware=lp.cosine_correctness_aware, cosine_on_steps=lp.cosine_on_steps,
      cosine_off_steps=lp.cosine_off_steps, cosine_offset=lp.cosine_offset,
      overlong_max_len=r.max_new_tokens if lp.overlong_buffer_len else 0,
      overlong_buffer_len=lp.overlong_buffer_len, overlong_penalty_factor=lp.overlong_penalty_factor,
      stop_properly_coef=lp.stop_properly_coef if lp.stop_properly_coef >= 0 else None)
