"""Checks `prorl_jax.algorithms` against verl 0.9.1 itself on random inputs (not part of CI).

The script runs twice: in the main venv it builds random inputs, writes them to an .npz, runs itself with the
verl venv's python in `--runner` mode (numpy + torch + verl only, no JAX), computes the same quantities with
prorl_jax, and prints JSON with the max abs/rel difference per quantity. Exit status 1 when any quantity is over
tolerance (|jax - verl| <= atol + rtol * |verl|), 2 when the verl venv is missing.

Set up the verl venv (outside the repo; torch first so pip never pulls a CUDA build), see README_verl_parity.md:
  python3 -m venv /work/verl_venv && /work/verl_venv/bin/pip install -U pip
  /work/verl_venv/bin/pip install torch==2.13.0
  /work/verl_venv/bin/pip install --no-deps verl==0.9.1
  /work/verl_venv/bin/pip install packaging numpy ray "tensordict<=0.10.0" omegaconf \
      "transformers>=5.5.3,<5.11,!=5.6.0" codetiming
Run (from the repo root): .venv/bin/python benchmarks/verl_parity.py [--verl-python PATH] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_NAMES = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3", "k1+", "abs+", "k3+")
CLIP_LOW, CLIP_HIGH, BETA, TEMPERATURE = 0.2, 0.28, 0.05, 1.2
OVERLONG_MAX, OVERLONG_BUF, OVERLONG_FACTOR = 64, 16, 1.0
# Global normalisers passed to both sides, as a trainer would for a mini-batch split over 2 ranks / micro-batches.
DP_SIZE, GLOBAL_TOKENS, GLOBAL_SEQS, SCALE_FACTOR = 2, 1000.0, 77.0, 512.0
ATOL, RTOL = 2e-5, 2e-5
# The 2026 objectives (ALGORITHMS.md §17). Clip-Cov with ratio 1 cuts every eligible token: its deterministic part
# (which tokens are eligible, and the loss once they are cut), without verl's torch.randperm draw.
OBJECTIVES = {"gspo": {}, "cispo": {}, "sapo": {"tau_pos": 1.0, "tau_neg": 1.05}, "gmpo": {},
              "kl_cov": {"kl_cov_ratio": 0.05, "ppo_kl_coef": 0.1},
              "clip_cov": {"clip_cov_ratio": 1.0, "clip_cov_lb": 0.05, "clip_cov_ub": 5.0}}
VERL_LOSS_NAMES = {"gspo": "gspo", "cispo": "cispo", "sapo": "sapo", "gmpo": "geo_mean", "kl_cov": "kl_cov",
                   "clip_cov": "clip_cov"}
OBJECTIVE_METRICS = {"gspo": ("pg_clipfrac", "ppo_kl"), "cispo": ("pg_clipfrac", "ppo_kl"), "sapo": ("ppo_kl",),
                     "gmpo": ("pg_clipfrac", "pg_clipfrac_lower", "ppo_kl"), "kl_cov": ("ppo_kl",),
                     "clip_cov": ("pg_clipfrac", "ppo_kl")}
ROLLOUT_LEVELS = ("token", "sequence")
ROLLOUT_THRESHOLDS = {"tis": 2.0, "icepop": (0.5, 5.0)}
ROLLOUT_METRICS = ("rollout_is_mean", "rollout_is_max", "rollout_is_min", "rollout_is_ratio_fraction_high",
                   "rollout_is_ratio_fraction_low", "rollout_is_std", "rollout_is_eff_sample_size")


def make_inputs(seed: int) -> dict[str, np.ndarray]:
  """Random inputs covering groups of 4, singletons, all-equal groups, clamps and clipping."""
  rng = np.random.default_rng(seed)
  sizes = [4] * 6 + [1] * 4 + [4, 4, 3]
  labels = rng.choice(10_000, size=len(sizes), replace=False)
  gids = np.concatenate([[lab] * s for lab, s in zip(labels, sizes)])
  scores = []
  for i, s in enumerate(sizes):
    if i == 10:
      scores.append(np.ones(s))  # all-equal, correct
    elif i == 11:
      scores.append(np.zeros(s))  # all-equal, wrong
    elif i % 2:
      scores.append(rng.integers(0, 2, s).astype(float))
    else:
      scores.append(rng.uniform(-1, 1, s).round(3))
  scores = np.concatenate(scores).astype(np.float32)
  perm = rng.permutation(len(gids))  # interleave groups: ids need not be contiguous
  gids, scores = gids[perm], scores[perm]
  b, t = len(gids), 24
  lengths = rng.integers(1, t + 1, b)
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
  logp = -rng.exponential(1.0, (b, t)).astype(np.float32)
  old_logp = logp + rng.normal(0, 0.3, (b, t)).astype(np.float32)
  old_logp[0, :3] = logp[0, :3] - 30.0  # log-ratio beyond the +-20 clamp
  old_logp[1, :3] = logp[1, :3] + 30.0
  ref_logp = logp + rng.normal(0, 2.0, (b, t)).astype(np.float32)
  ref_logp[2, :4] = logp[2, :4] + np.array([-30, 30, -15, 15], np.float32)  # k3 input/output clamps
  adv = (rng.normal(0, 1, (b, t)) * mask).astype(np.float32)
  adv[3] = 0.0
  token_noise = (rng.normal(0, 0.1, (b, t)) * mask).astype(np.float32)
  loss_mat = rng.normal(0, 1, (b, t)).astype(np.float32)
  # Large garbage at padding must not leak. (Not NaN: verl's seq-* modes sum loss * mask per row, so a NaN at
  # padding leaks into its loss; prorl_jax masks with `where` everywhere, tested in tests/test_algorithms_agg.)
  loss_mat[mask == 0] = 1e3
  loss_mask = mask.copy()
  loss_mask[4] = 0.0  # a fully masked sequence leaves the seq-mean denominators
  lb, lt, v, h = 6, 10, 97, 16
  logits = (rng.normal(0, 3, (lb, lt, v))).astype(np.float32)
  tokens = rng.integers(0, v, (lb, lt))
  hidden = rng.normal(0, 1, (lb, lt, h)).astype(np.float32)
  lm_head = rng.normal(0, 0.5, (h, v)).astype(np.float32)
  resp_lengths = rng.integers(1, OVERLONG_MAX + 1, 32)
  resp_lengths[:3] = [OVERLONG_MAX - OVERLONG_BUF, OVERLONG_MAX - OVERLONG_BUF + 1, OVERLONG_MAX]
  rollout_logp = old_logp + rng.normal(0, 0.3, (b, t)).astype(np.float32)
  rollout_logp[5, :4] = old_logp[5, :4] + np.array([-3, 3, -0.9, 1.8], np.float32)  # beyond TIS / ICE-POP bounds
  sizes_of = dict(zip(*np.unique(gids, return_counts=True)))
  multi = np.array([sizes_of[g] > 1 for g in gids])  # pass@k needs >= 2 responses per group (verl raises)
  return dict(gids=gids.astype(np.int64), scores=scores, mask=mask, logp=logp, old_logp=old_logp,
              rollout_logp=rollout_logp, multi=multi,
              ref_logp=ref_logp, adv=adv, token_noise=token_noise, loss_mat=loss_mat, loss_mask=loss_mask,
              logits=logits, tokens=tokens.astype(np.int64), hidden=hidden, lm_head=lm_head,
              resp_lengths=resp_lengths.astype(np.int64))


def _token_scores(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
  out = np.zeros_like(mask)
  last = mask.sum(1).astype(int) - 1
  out[np.arange(len(scores)), last] = scores
  return out


# ----------------------------------------------------------------------------------------------------------------
# verl side (runs in the verl venv: numpy, torch, verl only).


def run_verl(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  import types  # pylint: disable=g-import-not-at-top
  from collections import defaultdict  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from omegaconf import OmegaConf  # pylint: disable=g-import-not-at-top
  from verl.trainer.ppo import core_algos  # pylint: disable=g-import-not-at-top
  from verl.utils import torch_functional as vf  # pylint: disable=g-import-not-at-top

  tt = lambda a: torch.tensor(a)
  out: dict[str, np.ndarray] = {}
  mask = tt(x["mask"])
  uids = np.array([f"uid{g}" for g in x["gids"]], dtype=object)
  token_scores = tt(_token_scores(x["scores"], x["mask"]))
  algo = OmegaConf.create({"gamma": 1.0})
  out["adv_grpo"] = core_algos.compute_grpo_outcome_advantage(token_scores.clone(), mask, uids)[0]
  out["adv_drgrpo"] = core_algos.compute_grpo_outcome_advantage(token_scores.clone(), mask, uids,
                                                                 norm_adv_by_std_in_grpo=False)[0]
  out["adv_rloo"] = core_algos.compute_rloo_outcome_advantage(token_scores.clone(), mask, uids)[0]
  out["adv_rfpp_baseline"] = core_algos.compute_reinforce_plus_plus_baseline_outcome_advantage(
      token_scores.clone(), mask, uids, config=algo)[0]
  token_rewards = token_scores + tt(x["token_noise"])
  for gamma in (1.0, 0.9):
    cfg = OmegaConf.create({"gamma": gamma})
    out[f"adv_rfpp_gamma{gamma}"] = core_algos.compute_reinforce_plus_plus_outcome_advantage(
        token_rewards.clone(), mask, config=cfg)[0]

  for mode in AGG_MODES:
    for dual in ("c3", "nodual", "c3global"):
      gbi = {} if dual != "c3global" else {"dp_size": DP_SIZE, "batch_num_tokens": GLOBAL_TOKENS,
                                            "global_batch_size": GLOBAL_SEQS, "loss_scale_factor": SCALE_FACTOR}
      cfg = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": CLIP_LOW, "clip_ratio_high": CLIP_HIGH,
                              "clip_ratio_c": 1e10 if dual == "nodual" else 3.0, "global_batch_info": gbi})
      logp = tt(x["logp"]).requires_grad_(True)
      loss, metrics = core_algos.compute_policy_loss_vanilla(tt(x["old_logp"]), logp, tt(x["adv"]), mask, mode, cfg)
      loss.backward()
      key = f"pl_{mode}_{dual}"
      out[key + "_loss"], out[key + "_grad"] = loss.detach(), logp.grad
      out[key + "_clipfrac"] = np.float32(metrics["actor/pg_clipfrac"])
      out[key + "_ppo_kl"] = np.float32(metrics["actor/ppo_kl"])
      if dual != "nodual":
        out[key + "_clipfrac_lower"] = np.float32(metrics["actor/pg_clipfrac_lower"])
    out[f"agg_{mode}"] = core_algos.agg_loss(tt(x["loss_mat"]), tt(x["loss_mask"]), mode)
    out[f"agg_{mode}_global"] = core_algos.agg_loss(tt(x["loss_mat"]), tt(x["loss_mask"]), mode, dp_size=DP_SIZE,
                                                    batch_num_tokens=GLOBAL_TOKENS, global_batch_size=GLOBAL_SEQS,
                                                    loss_scale_factor=SCALE_FACTOR)

  for name in KL_NAMES:
    logp = tt(x["logp"]).requires_grad_(True)
    kl = core_algos.kl_penalty(logp, tt(x["ref_logp"]), name)
    (kl * mask).sum().backward()
    out[f"kl_{name}"], out[f"kl_{name}_grad"] = kl.detach(), logp.grad
  # verl `apply_kl_penalty` (ray_trainer.py) on the same pieces: kld = kl_penalty(old, ref) * m.
  kld = core_algos.kl_penalty(tt(x["old_logp"]), tt(x["ref_logp"]), "kl") * mask
  out["kl_reward"] = token_scores - BETA * kld
  out["kl_reward_current_kl"] = torch.mean(vf.masked_mean(kld, mask, axis=-1))

  logits = tt(x["logits"]) / TEMPERATURE
  labels = tt(x["tokens"])
  out["logp_from_logits"] = vf.logprobs_from_logits(logits, labels)
  out["entropy_from_logits"] = vf.entropy_from_logits(logits)
  hid_logits = (tt(x["hidden"]) @ tt(x["lm_head"])) / TEMPERATURE
  out["logp_from_hidden"] = vf.logprobs_from_logits(hid_logits, labels)
  out["entropy_from_hidden"] = vf.entropy_from_logits(hid_logits)

  out["overlong"] = _verl_overlong(x["resp_lengths"])
  out["dyn_keep"] = _verl_keep(x["scores"], x["gids"], types, defaultdict)
  out.update(_verl_objectives(x))
  return {k: (v.detach().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in out.items()}


def _verl_objectives(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """verl 0.9.1's 2026 losses, rollout correction and pass@k advantage on the same inputs."""
  import torch  # pylint: disable=g-import-not-at-top
  from omegaconf import OmegaConf  # pylint: disable=g-import-not-at-top
  from verl.trainer.ppo import core_algos, rollout_corr_helper  # pylint: disable=g-import-not-at-top
  from verl.workers.config import ActorConfig, PolicyLossConfig  # pylint: disable=g-import-not-at-top

  tt = lambda a: torch.tensor(a)
  out = {}
  mask = tt(x["mask"])
  for level in ROLLOUT_LEVELS:
    for name, threshold in ROLLOUT_THRESHOLDS.items():
      verl_threshold = threshold if isinstance(threshold, float) else f"{threshold[0]}_{threshold[1]}"
      w, metrics = rollout_corr_helper.compute_rollout_correction_weights(
          tt(x["old_logp"] - x["rollout_logp"]), mask, rollout_is=level, rollout_is_threshold=verl_threshold)
      out[f"rc_{level}_{name}_w"] = w
      for key in ROLLOUT_METRICS + (("rollout_is_oob_ratio",) if name == "icepop" else ()):
        out[f"rc_{level}_{name}_{key}"] = np.float32(metrics[key])
  weights = rollout_corr_helper.compute_rollout_correction_weights(
      tt(x["old_logp"] - x["rollout_logp"]), mask, rollout_is="token", rollout_is_threshold="0.5_5.0")[0]
  for loss_name, extra in OBJECTIVES.items():
    for agg in ("token-mean", "seq-mean-token-mean"):
      for weighted in (False, True):
        policy = PolicyLossConfig(loss_mode=VERL_LOSS_NAMES[loss_name], **{
            k: v for k, v in extra.items() if k in ("clip_cov_ratio", "clip_cov_lb", "clip_cov_ub", "kl_cov_ratio",
                                                    "ppo_kl_coef")})
        cfg = ActorConfig(strategy="fsdp", rollout_n=4, ppo_micro_batch_size_per_gpu=2, clip_ratio_low=CLIP_LOW,
                          clip_ratio_high=CLIP_HIGH, tau_pos=extra.get("tau_pos", 1.0),
                          tau_neg=extra.get("tau_neg", 1.05), policy_loss=policy)
        logp = tt(x["logp"]).requires_grad_(True)
        fn = core_algos.get_policy_loss_fn(VERL_LOSS_NAMES[loss_name])
        loss, metrics = fn(tt(x["old_logp"]), logp, tt(x["adv"]), mask, loss_agg_mode=agg, config=cfg,
                           rollout_is_weights=weights if weighted else None)
        loss.backward()
        key = f"obj_{loss_name}_{agg}_{'w' if weighted else 'nw'}"
        out[key + "_loss"], out[key + "_grad"] = loss.detach(), logp.grad
        for metric in OBJECTIVE_METRICS[loss_name]:
          out[f"{key}_{metric}"] = np.float32(metrics["actor/" + metric])
  multi = x["multi"]
  token_scores = tt(_token_scores(x["scores"][multi], x["mask"][multi]))
  uids = np.array([f"uid{g}" for g in x["gids"][multi]], dtype=object)
  for std in (True, False):
    out[f"adv_passk_std{std}"] = core_algos.compute_grpo_passk_outcome_advantage(
        token_scores, tt(x["mask"][multi]), uids, config=OmegaConf.create({"norm_adv_by_std_in_grpo": std}))[0]
  return out


def _verl_overlong(lengths: np.ndarray) -> np.ndarray:
  """verl `DAPORewardManager` with a zero correctness score: the reward it writes is the overlong penalty."""
  import torch  # pylint: disable=g-import-not-at-top
  from omegaconf import OmegaConf  # pylint: disable=g-import-not-at-top
  from verl import DataProto  # pylint: disable=g-import-not-at-top
  from verl.workers.reward_manager.dapo import DAPORewardManager  # pylint: disable=g-import-not-at-top

  class _Tok:
    eos_token = "</s>"

    def decode(self, ids, skip_special_tokens=True):
      del skip_special_tokens
      return " ".join(str(int(i)) for i in ids)

  b, plen = len(lengths), 2
  responses = torch.ones((b, OVERLONG_MAX), dtype=torch.long)
  attn = torch.cat([torch.ones((b, plen), dtype=torch.long),
                    (torch.arange(OVERLONG_MAX)[None] < torch.tensor(lengths)[:, None]).long()], dim=1)
  data = DataProto.from_dict(
      tensors={"prompts": torch.ones((b, plen), dtype=torch.long), "responses": responses, "attention_mask": attn},
      non_tensors={"reward_model": np.array([{"ground_truth": "0"}] * b, dtype=object),
                   "data_source": np.array(["parity"] * b, dtype=object)})
  cfg = OmegaConf.create({"enable": True, "len": OVERLONG_BUF, "penalty_factor": OVERLONG_FACTOR, "log": False})
  manager = DAPORewardManager(_Tok(), num_examine=0, compute_score=lambda **kw: 0.0, max_resp_len=OVERLONG_MAX,
                              overlong_buffer_cfg=cfg)
  return manager(data).sum(-1).numpy()


def _verl_keep(scores: np.ndarray, gids: np.ndarray, types, defaultdict) -> np.ndarray:
  """verl v1 `ReplayBuffer._dapo_filtered_keys` (metric "reward") on the scores; transfer_queue stubbed out."""
  import torch  # pylint: disable=g-import-not-at-top

  rows = {f"{g}_{i}": float(s) for i, (g, s) in enumerate(zip(gids, scores))}
  tq = types.ModuleType("transfer_queue")
  tq.KVBatchMeta = object
  tq.kv_batch_get = lambda keys, partition_id, select_fields: {"rm_scores": [torch.tensor([rows[k]]) for k in keys]}
  sys.modules.setdefault("transfer_queue", tq)
  # Load the module file alone: the `verl.trainer.ppo.v1` package __init__ pulls in hydra, vLLM agent loops, ...
  import importlib.util  # pylint: disable=g-import-not-at-top
  import verl  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(verl.__file__).parent / "trainer" / "ppo" / "v1" / "replay_buffer.py"
  spec = importlib.util.spec_from_file_location("verl_v1_replay_buffer", path)
  replay_buffer = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(replay_buffer)
  replay_buffer.tq = tq
  buf = object.__new__(replay_buffer.ReplayBuffer)
  buf.filter_groups_metric = replay_buffer.FILTER_GROUPS_REWARD_METRIC
  buf.finished_keys = defaultdict(set, {"train": {str(g) for g in gids}})
  buf.partitions = defaultdict(dict, {"train": {k: {} for k in rows}})
  buf._dapo_classification_cache = defaultdict(dict)  # pylint: disable=protected-access
  filtered, _ = buf._dapo_filtered_keys("train")  # pylint: disable=protected-access
  return np.array([str(g) not in filtered for g in gids])


# ----------------------------------------------------------------------------------------------------------------
# prorl_jax side (main venv).


def run_jax(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  from prorl_jax import algorithms as A  # pylint: disable=g-import-not-at-top

  out = {}
  scores, gids, mask = x["scores"], x["gids"], x["mask"]
  out["adv_grpo"] = A.grpo_advantages(scores, gids, mask)
  out["adv_drgrpo"] = A.grpo_advantages(scores, gids, mask, scale_by_std=False)
  out["adv_rloo"] = A.rloo_advantages(scores, gids, mask)
  out["adv_rfpp_baseline"] = A.reinforce_pp_baseline_advantages(scores, gids, mask)
  token_rewards = _token_scores(scores, mask) + x["token_noise"]
  for gamma in (1.0, 0.9):
    out[f"adv_rfpp_gamma{gamma}"] = A.reinforce_pp_advantages(token_rewards, mask, gamma)

  for mode in AGG_MODES:
    for dual in ("c3", "nodual", "c3global"):
      clip_c = None if dual == "nodual" else 3.0
      glob = {} if dual != "c3global" else dict(dp_size=DP_SIZE, global_num_tokens=GLOBAL_TOKENS,
                                                 global_num_seqs=GLOBAL_SEQS, loss_scale_factor=SCALE_FACTOR)

      def loss_fn(logp, mode=mode, clip_c=clip_c, glob=glob):
        return A.policy_loss(logp, x["old_logp"], x["adv"], mask, clip_low=CLIP_LOW, clip_high=CLIP_HIGH,
                             clip_c=clip_c, agg_mode=mode, **glob)

      (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(x["logp"]))
      key = f"pl_{mode}_{dual}"
      out[key + "_loss"], out[key + "_grad"] = loss, grad
      out[key + "_clipfrac"], out[key + "_ppo_kl"] = metrics["pg_clipfrac"], metrics["ppo_kl"]
      if dual != "nodual":
        out[key + "_clipfrac_lower"] = metrics["pg_clipfrac_lower"]
    out[f"agg_{mode}"] = A.agg_loss(x["loss_mat"], x["loss_mask"], mode)
    out[f"agg_{mode}_global"] = A.agg_loss(x["loss_mat"], x["loss_mask"], mode, dp_size=DP_SIZE,
                                           global_num_tokens=GLOBAL_TOKENS, global_num_seqs=GLOBAL_SEQS,
                                           loss_scale_factor=SCALE_FACTOR)

  for name in KL_NAMES:
    kl_fn = lambda logp, name=name: A.kl_penalty(logp, x["ref_logp"], name)
    out[f"kl_{name}"] = kl_fn(jnp.asarray(x["logp"]))
    out[f"kl_{name}_grad"] = jax.grad(lambda lp, f=kl_fn: jnp.sum(f(lp) * mask))(jnp.asarray(x["logp"]))
  out["kl_reward"], out["kl_reward_current_kl"] = A.kl_in_reward(_token_scores(scores, mask), x["old_logp"],
                                                                 x["ref_logp"], mask, BETA, "kl")

  out["logp_from_logits"], out["entropy_from_logits"] = A.token_logprobs_from_logits(
      x["logits"], x["tokens"], TEMPERATURE, chunk_size=16, return_entropy=True)
  out["logp_from_hidden"], out["entropy_from_hidden"] = A.token_logprobs_from_hidden(
      x["hidden"], x["lm_head"], x["tokens"], TEMPERATURE, chunk_size=16, return_entropy=True,
      precision=jax.lax.Precision.HIGHEST)
  out["overlong"] = A.overlong_penalty(x["resp_lengths"], OVERLONG_MAX, OVERLONG_BUF, OVERLONG_FACTOR)
  out["dyn_keep"] = A.dynamic_sampling_keep(scores, gids)
  out.update(_jax_objectives(x))
  return {k: np.asarray(v) for k, v in out.items()}


def _jax_objectives(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from prorl_jax import algorithms as A  # pylint: disable=g-import-not-at-top

  out = {}
  mask = x["mask"]
  for level in ROLLOUT_LEVELS:
    for name, threshold in ROLLOUT_THRESHOLDS.items():
      w, metrics = A.rollout_correction_weights(x["old_logp"], x["rollout_logp"], mask, level=level,
                                                threshold=threshold)
      out[f"rc_{level}_{name}_w"] = w
      for key in ROLLOUT_METRICS + (("rollout_is_oob_ratio",) if name == "icepop" else ()):
        out[f"rc_{level}_{name}_{key}"] = metrics[key]
  weights = A.rollout_correction_weights(x["old_logp"], x["rollout_logp"], mask, level="token",
                                         threshold=(0.5, 5.0))[0]
  fns = {"gspo": A.gspo_loss, "cispo": A.cispo_loss, "sapo": A.sapo_loss, "gmpo": A.gmpo_loss,
         "kl_cov": A.kl_cov_loss, "clip_cov": A.clip_cov_loss}
  for loss_name, extra in OBJECTIVES.items():
    kw = dict(extra)
    if loss_name != "sapo":
      kw.update(agg_mode=None)
    if loss_name in ("gspo", "cispo", "gmpo", "clip_cov"):
      kw.update(clip_low=CLIP_LOW, clip_high=CLIP_HIGH)
    if loss_name == "clip_cov":
      kw["key"] = jax.random.key(0)
    for agg in ("token-mean", "seq-mean-token-mean"):
      if "agg_mode" in kw:
        kw["agg_mode"] = agg
      for weighted in (False, True):
        def loss_fn(logp, kw=kw, weighted=weighted, fn=fns[loss_name]):
          return fn(logp, x["old_logp"], x["adv"], mask, is_weights=weights if weighted else None, **kw)
        (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(x["logp"]))
        key = f"obj_{loss_name}_{agg}_{'w' if weighted else 'nw'}"
        out[key + "_loss"], out[key + "_grad"] = loss, grad
        for metric in OBJECTIVE_METRICS[loss_name]:
          out[f"{key}_{metric}"] = metrics[metric]
  multi = x["multi"]
  for std in (True, False):
    out[f"adv_passk_std{std}"] = A.pass_at_k_advantages(x["scores"][multi], x["gids"][multi], mask[multi],
                                                        scale_by_std=std)
  return out


def compare(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
  report = {}
  for key in sorted(ref):
    a, b = ours[key].astype(np.float64), ref[key].astype(np.float64)
    if a.shape != b.shape:
      report[key] = {"max_abs": float("inf"), "max_rel": float("inf"), "ok": False}
      continue
    diff = np.abs(a - b)
    report[key] = {"max_abs": float(diff.max(initial=0.0)),
                   "max_rel": float((diff / np.maximum(np.abs(b), 1e-12)).max(initial=0.0)),
                   "ok": bool(np.all(diff <= ATOL + RTOL * np.abs(b)))}
  missing = sorted(set(ref) ^ set(ours))
  if missing:
    raise KeyError(f"keys differ between the two sides: {missing}")
  return report


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--verl-python", default=os.environ.get("VERL_PYTHON", "/work/verl_venv/bin/python"))
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--runner", nargs=2, metavar=("IN_NPZ", "OUT_NPZ"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.runner:
    with np.load(args.runner[0]) as f:
      inputs = dict(f)
    np.savez(args.runner[1], **run_verl(inputs))
    return 0
  if not pathlib.Path(args.verl_python).exists():
    print(f"verl venv python not found at {args.verl_python}; create it as in the module docstring or pass "
          "--verl-python.", file=sys.stderr)
    return 2
  worst: dict[str, dict[str, float]] = {}
  with tempfile.TemporaryDirectory() as tmp:
    for seed in args.seeds:
      inputs = make_inputs(seed)
      in_path, out_path = os.path.join(tmp, f"in{seed}.npz"), os.path.join(tmp, f"out{seed}.npz")
      np.savez(in_path, **inputs)
      env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
      proc = subprocess.run([args.verl_python, os.path.abspath(__file__), "--runner", in_path, out_path],
                            capture_output=True, text=True, env=env, check=False)
      if proc.returncode:
        print(proc.stdout + proc.stderr, file=sys.stderr)
        return 1
      with np.load(out_path) as f:
        ref = dict(f)
      for key, rec in compare(run_jax(inputs), ref).items():
        prev = worst.get(key)
        worst[key] = rec if prev is None else {"max_abs": max(prev["max_abs"], rec["max_abs"]),
                                               "max_rel": max(prev["max_rel"], rec["max_rel"]),
                                               "ok": prev["ok"] and rec["ok"]}
  failed = sorted(k for k, v in worst.items() if not v["ok"])
  print(json.dumps({"seeds": args.seeds, "atol": ATOL, "rtol": RTOL, "num_checks": len(worst), "failed": failed,
                    "max_abs_overall": max(v["max_abs"] for v in worst.values()),
                    "max_rel_overall": max(v["max_rel"] for v in worst.values()), "results": worst}, indent=1))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
