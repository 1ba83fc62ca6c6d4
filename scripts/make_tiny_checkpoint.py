"""Builds the embedded default's starting point: a small tokenizer and a warm-started tiny Qwen2 checkpoint.

  python scripts/make_tiny_checkpoint.py [--out prorl_jax/assets/tiny] [--steps 300]
  python scripts/make_tiny_checkpoint.py --suite=chain --levels=1-3 --eval_levels=1-8 --out=runs/chain_base

The tiny suite (`prorl_jax.data.tiny_tasks`) is the default; `--suite=chain` warm-starts on the easy levels of the
arithmetic chains (`prorl_jax.data.chain_tasks`) and reports validation accuracy per level up to `--eval_levels`,
the held-out harder levels included.

1. Trains a byte-level BPE tokenizer (digits split one per token, ChatML special tokens) on the tiny task suite's
   formatted prompts and reference answers.
2. Initialises a small Qwen2 and trains it briefly with supervised fine-tuning on reference answers of half of the
   *training* split, stopping early on purpose once its pass@1 on the other half (the dev set) reaches `--target`:
   the model has learned the answer formats and part of the skill, so RL has room to improve it. Validation
   problems are never trained on or used for stopping; their accuracy is only reported.
3. Writes a Hugging Face checkpoint directory (config.json, model.safetensors, tokenizer files) and a
   `warm_start.json` with the recipe and the measured validation accuracy.
Deterministic for a given seed on a given machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from prorl_jax import models, rollout
from prorl_jax.data import CHATML_TEMPLATE, apply_instruction, encode_prompt
from prorl_jax.data.chain_tasks import chain_dataset, parse_levels
from prorl_jax.data.tiny_tasks import tiny_dataset
from prorl_jax.rewards import RewardManager

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def build_tokenizer(examples, vocab_size: int):
  import tokenizers
  import transformers
  from tokenizers import decoders, models as tok_models, pre_tokenizers, trainers

  tok = tokenizers.Tokenizer(tok_models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False)])
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  texts = [f"<|im_start|>user\n{apply_instruction(e.domain, e.prompt)}<|im_end|>\n<|im_start|>assistant\n"
           f"{e.extra['reference']}<|im_end|>" for e in examples]
  tok.train_from_iterator(texts, trainer)
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                              bos_token=None, model_max_length=512)
  fast.chat_template = CHATML_TEMPLATE
  return fast


def sft_arrays(tokenizer, examples, length: int):
  ids = np.full((len(examples), length), tokenizer.pad_token_id, np.int32)
  loss_mask = np.zeros((len(examples), length), np.float32)
  for i, e in enumerate(examples):
    prompt = encode_prompt(tokenizer, e)
    answer = tokenizer.encode(e.extra["reference"], add_special_tokens=False) + [tokenizer.eos_token_id]
    seq = (prompt + answer)[:length]
    ids[i, :len(seq)] = seq
    # Position t predicts token t + 1: the loss covers the answer and its EOS.
    loss_mask[i, len(prompt) - 1:len(seq) - 1] = 1.0
  return ids, loss_mask


def group_of(example) -> str:
  """What accuracy is reported under: the chain level's benchmark (chain/L3), else the domain."""
  return example.extra.get("benchmark") or example.domain


def validation_accuracy(config, params, tokenizer, examples, manager, *, temperature: float, samples: int,
                        max_new_tokens: int):
  prompts = [encode_prompt(tokenizer, e) for e in examples]
  out = rollout.Sampler(config, pad_id=tokenizer.pad_token_id).generate(
      params, prompts, max_new_tokens=max_new_tokens, num_samples=samples, eos_token_ids=[tokenizer.eos_token_id],
      sampling=rollout.SamplingParams(temperature=temperature, top_p=1.0), seed=1)
  texts = [tokenizer.decode(out.response(r), skip_special_tokens=True) for r in range(len(out.lengths))]
  domains = [examples[r // samples].domain for r in range(len(texts))]
  truths = [examples[r // samples].ground_truth for r in range(len(texts))]
  groups = [group_of(examples[r // samples]) for r in range(len(texts))]
  scores = manager.score_batch(domains, texts, truths).scores
  per_group = {g: float(np.mean([s for s, gg in zip(scores, groups) if gg == g])) for g in sorted(set(groups))}
  return float(np.mean(scores)), per_group


def load_suite(args, size: int, split: str, levels=None):
  if args.suite == "chain":
    # Level 1 has only a few hundred distinct problems; the other levels fill the pool.
    return chain_dataset(size, seed=args.seed, split=split, levels=levels or parse_levels(args.levels),
                         allow_fewer=split == "train")
  return tiny_dataset(size, seed=args.seed, split=split)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[1] / "prorl_jax/assets/tiny"))
  p.add_argument("--steps", type=int, default=3000, help="upper bound on SFT steps")
  p.add_argument("--target", type=float, default=0.2, help="stop once dev pass@1 (T=0.6) reaches this")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--lr", type=float, default=3e-3)
  p.add_argument("--train_size", type=int, default=1600)
  p.add_argument("--val_size", type=int, default=300)
  p.add_argument("--vocab", type=int, default=384)
  p.add_argument("--hidden", type=int, default=128)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--eval_every", type=int, default=50)
  p.add_argument("--suite", choices=("tiny", "chain"), default="tiny")
  p.add_argument("--levels", default="1-3", help="chain levels to warm-start on (--suite=chain)")
  p.add_argument("--eval_levels", default="", help="chain levels to report validation accuracy on (default: --levels)")
  p.add_argument("--max_new_tokens", type=int, default=16, help="response budget when measuring accuracy")
  args = p.parse_args()
  start = time.time()
  pool = load_suite(args, args.train_size, "train")
  order = np.random.default_rng(args.seed).permutation(len(pool))
  train, dev = [pool[i] for i in order[0::2]], [pool[i] for i in order[1::2]][:args.val_size]
  eval_levels = parse_levels(args.eval_levels) if args.suite == "chain" and args.eval_levels else None
  val = load_suite(args, args.val_size, "validation", eval_levels)
  tokenizer = build_tokenizer(pool, args.vocab)
  vocab = -(-len(tokenizer) // 64) * 64
  config = models.Qwen2Config(
      vocab_size=vocab, hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_hidden_layers=args.layers,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
      rope_theta=10000.0, bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
  params = models.init_params(config, jax.random.key(args.seed))
  answer = max(len(tokenizer.encode(e.extra["reference"], add_special_tokens=False)) for e in train) + 2
  length = max(len(encode_prompt(tokenizer, e)) for e in train) + max(12, answer)  # 12: the tiny asset's recipe
  ids, loss_mask = sft_arrays(tokenizer, train, length=length)
  schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, 20, args.steps, args.lr * 0.1)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.01))
  opt_state = optimizer.init(params)

  @jax.jit
  def sft_step(params, opt_state, ids, loss_mask):
    def loss_fn(p):
      logits = models.forward(config, p, ids, ids != tokenizer.pad_token_id)
      logp = jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), ids[:, 1:, None], -1)[..., 0]
      return -jnp.sum(logp * loss_mask[:, :-1]) / jnp.sum(loss_mask)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(args.seed)
  history = []
  with RewardManager(2) as manager:
    for step in range(1, args.steps + 1):
      idx = rng.choice(len(ids), args.batch, replace=False)
      params, opt_state, loss = sft_step(params, opt_state, ids[idx], loss_mask[idx])
      if step % args.eval_every == 0 or step == args.steps:
        acc, per_domain = validation_accuracy(config, params, tokenizer, dev, manager, temperature=0.6, samples=4,
                                              max_new_tokens=args.max_new_tokens)
        history.append({"step": step, "loss": float(loss), "dev_pass@1_t0.6": acc, "per_domain": per_domain})
        print(json.dumps(history[-1]), file=sys.stderr, flush=True)
        if acc >= args.target:
          break
    val_acc, val_domains = validation_accuracy(config, params, tokenizer, val, manager, temperature=0.6, samples=4,
                                               max_new_tokens=args.max_new_tokens)
  out = pathlib.Path(args.out)
  models.save_hf(config, params, out, tokenizer=tokenizer)
  recipe = {"script": "scripts/make_tiny_checkpoint.py", "args": vars(args), "num_params": config.num_params(),
            "sft_steps": history[-1]["step"], "history": history,
            "validation_pass@1_t0.6": val_acc, "validation_per_domain": val_domains,
            "seconds": round(time.time() - start, 1)}
  recipe["args"]["out"] = os.path.relpath(args.out, pathlib.Path(__file__).resolve().parents[1])
  (out / "warm_start.json").write_text(json.dumps(recipe, indent=2) + "\n")
  print(json.dumps({"out": str(out), "num_params": config.num_params(), "final": history[-1],
                    "validation_pass@1_t0.6": val_acc}))


if __name__ == "__main__":
  main()
