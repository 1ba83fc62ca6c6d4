"""A byte-level ChatML tokenizer built in memory: for tests and CPU smoke runs, where nothing can be downloaded.

Every UTF-8 byte is one token (ids 0-255, GPT-2 byte-to-unicode alphabet, no merges), so any text round-trips;
special tokens follow: <|endoftext|> (pad), <|im_start|>, <|im_end|> (eos), <think>, </think>. It is a real
`transformers.PreTrainedTokenizerFast` with a ChatML chat template, so code paths match a Qwen tokenizer's.
"""

from __future__ import annotations

from collections.abc import Sequence

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")


def byte_chat_tokenizer(extra_special_tokens: Sequence[str] = ()):
  """Returns a `PreTrainedTokenizerFast` with 256 byte tokens + specials; vocab size `256 + 5 + len(extra)`."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # pylint: disable=g-import-not-at-top
  from transformers import PreTrainedTokenizerFast  # pylint: disable=g-import-not-at-top
  from transformers.convert_slow_tokenizer import bytes_to_unicode  # pylint: disable=g-import-not-at-top

  from prorl_jax.data.formatting import CHATML_TEMPLATE  # pylint: disable=g-import-not-at-top

  byte_chars = bytes_to_unicode()
  vocab = {byte_chars[b]: b for b in range(256)}
  backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  backend.decoder = decoders.ByteLevel()
  specials = list(SPECIAL_TOKENS) + [t for t in extra_special_tokens if t not in SPECIAL_TOKENS]
  backend.add_special_tokens(specials)
  tok = PreTrainedTokenizerFast(tokenizer_object=backend, name_or_path="prorl_jax/byte_chat_tokenizer",
                                eos_token="<|im_end|>", pad_token="<|endoftext|>")
  tok.chat_template = CHATML_TEMPLATE
  return tok
