"""Tiny Hugging Face models and tokenizers created on the fly (nothing can be downloaded in tests)."""

from __future__ import annotations

import pathlib

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def make_hf_model(out_dir: str | pathlib.Path, *, vocab_size=128, hidden_size=64, intermediate_size=96,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                  rope_theta=10000.0, head_dim=None, seed=0, std=0.1, max_shard_size=None, dtype="float32"):
  """Saves a random `transformers.Qwen2ForCausalLM` with `save_pretrained`; returns the torch model."""
  import torch
  import transformers

  torch.manual_seed(seed)
  kwargs = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                num_key_value_heads=num_key_value_heads, tie_word_embeddings=tie_word_embeddings,
                rope_theta=rope_theta, eos_token_id=1, bos_token_id=0, pad_token_id=0)
  if head_dim is not None:
    kwargs["head_dim"] = head_dim
  model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kwargs)).eval()
  with torch.no_grad():
    # Larger than the default init so that logits differ visibly between tokens and bugs show up.
    for p in model.parameters():
      p.normal_(0.0, std)
  if dtype == "bfloat16":
    model = model.to(torch.bfloat16)
  save_kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
  model.save_pretrained(str(out_dir), **save_kwargs)
  return model


def make_tokenizer(out_dir: str | pathlib.Path | None = None, *, chat_template: str | None = CHATML_TEMPLATE):
  """A byte-level BPE tokenizer (vocab ~300) with ChatML special tokens, trained on a tiny corpus."""
  import tokenizers
  import transformers
  from tokenizers import decoders, models, pre_tokenizers, trainers

  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  corpus = ["What is 2 + 3? The answer is \\boxed{5}.", "user assistant system", "Hello, world!"] * 20
  tok.train_from_iterator(corpus, trainer)
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                              pad_token="<|endoftext|>")
  if chat_template is not None:
    fast.chat_template = chat_template
  if out_dir is not None:
    fast.save_pretrained(str(out_dir))
  return fast


def torch_logits(model, ids: np.ndarray) -> np.ndarray:
  import torch
  with torch.no_grad():
    return model(torch.tensor(ids)).logits.float().numpy()
