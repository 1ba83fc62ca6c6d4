"""Tokenizer loading and chat-template prompt formatting (transformers tokenizers; no torch needed)."""

from __future__ import annotations

import os
from typing import Any, Sequence

from prorl_jax.models.hf_io import resolve_checkpoint_dir


class ChatTemplateError(ValueError):
  """The tokenizer cannot format chat messages; the message says where it looked and how to fix it."""


def load_tokenizer(path: str | os.PathLike, *, revision: str | None = None, chat_template: str | None = None):
  """Loads the tokenizer of a checkpoint directory or hub id with `transformers.AutoTokenizer`.

  Args:
    path: directory holding tokenizer files (tokenizer.json / tokenizer_config.json) or a hub id.
    revision: hub revision.
    chat_template: optional Jinja chat template that replaces (or supplies) the checkpoint's own.
  """
  import transformers  # Heavy import; only needed here.

  ckpt_dir = resolve_checkpoint_dir(path, revision)
  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(ckpt_dir))
  except (OSError, ValueError) as e:
    raise FileNotFoundError(f"could not load a tokenizer from {ckpt_dir}: {e}") from e
  if chat_template is not None:
    tokenizer.chat_template = chat_template
  tokenizer.name_or_path = str(path)
  return tokenizer


def apply_chat_template(tokenizer: Any, messages: Sequence[dict[str, str]], *,
                        add_generation_prompt: bool = True) -> list[int]:
  """Token ids of `messages` (`[{"role": "user", "content": ...}, ...]`) formatted by the tokenizer's template.

  With `add_generation_prompt`, the ids end with the assistant turn's opening, ready for sampling.
  """
  if not getattr(tokenizer, "chat_template", None):
    where = getattr(tokenizer, "name_or_path", "") or "this tokenizer"
    raise ChatTemplateError(
        f"the tokenizer loaded from {where!r} has no chat template (no 'chat_template' in tokenizer_config.json "
        "and no chat_template.jinja). Use the checkpoint's instruct/chat tokenizer, or pass a Jinja template "
        "(load_tokenizer(..., chat_template=TEMPLATE); in configs: tokenizer.chat_template).")
  ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=True)
  if isinstance(ids, dict) or hasattr(ids, "keys"):  # Some tokenizers return a BatchEncoding.
    ids = ids["input_ids"]
  return [int(i) for i in ids]
