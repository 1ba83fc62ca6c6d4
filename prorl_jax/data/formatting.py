"""Chat formatting: ProRL's per-domain answer-format instructions and the tokenizer's chat template.

Each instruction is a template with one "{prompt}" slot (filled with `str.replace`, so LaTeX braces need no
escaping). Math follows P1 App. D / DeepScaleR ("{problem} Let's think step by step and output the final answer
within \\boxed{}."); logic asks for `<answer></answer>` tags (Reasoning Gym's verifier extracts them); code asks
for a fenced python block (Eurus-2-RL's wording; the code verifier runs the last block); STEM asks for the option
letter in \\boxed{}; IFEval prompts are used as is. A prompt that already carries the instruction text (as the
released ProRL/DeepScaleR data does) is left unchanged.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import Any

from prorl_jax.data.schema import DOMAINS, DataError, Example

PROMPT_SLOT = "{prompt}"

DEFAULT_INSTRUCTIONS: Mapping[str, str] = types.MappingProxyType({
    "math": "{prompt} Let's think step by step and output the final answer within \\boxed{}.",
    "logic": ("{prompt}\n\nThink step by step, then give only the final answer inside <answer></answer> tags, "
              "e.g. <answer>42</answer>."),
    "code": "{prompt}\n\nWrite Python code to solve the problem. Present the code in \n```python\nYour code\n```\n"
            "at the end.",
    "stem": ("{prompt}\n\nLet's think step by step and output the letter of the correct option within \\boxed{}, "
             "e.g. \\boxed{A}."),
    "ifeval": "{prompt}",
})

# Plain ChatML, the format of Qwen2.5 instruct models; for tokenizers that ship without a template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class ChatTemplateError(ValueError):
  """The tokenizer cannot format chats; the message names the tokenizer and the fix."""


def apply_instruction(domain: str, text: str, instructions: Mapping[str, str] | None = DEFAULT_INSTRUCTIONS) -> str:
  """Returns `text` wrapped in the instruction template of `domain` (unchanged if it already contains it)."""
  if instructions is None or domain not in instructions:
    return text
  template = instructions[domain]
  if template.count(PROMPT_SLOT) != 1:
    raise ValueError(f"instructions[{domain!r}] = {template!r} must contain {PROMPT_SLOT!r} exactly once")
  before, after = template.split(PROMPT_SLOT)
  if (not before.strip() or before.strip() in text) and (not after.strip() or after.strip() in text):
    return text
  return before + text + after


def build_messages(example: Example, *, system_prompt: str | None = None,
                   instructions: Mapping[str, str] | None = DEFAULT_INSTRUCTIONS) -> list[dict[str, str]]:
  """Chat messages for `example`: optional system turn, then the user turn(s) with the domain instruction.

  The instruction goes into the last user message. An example's own system message wins over `system_prompt`.
  `instructions=None` leaves the text untouched.
  """
  if instructions is not None:
    unknown = set(instructions) - set(DOMAINS)
    if unknown:
      raise ValueError(f"instructions has unknown domains {sorted(unknown)}; use {DOMAINS}")
  if example.messages is not None:
    messages = [dict(m) for m in example.messages]
  else:
    messages = [{"role": "user", "content": example.prompt}]
  messages[-1]["content"] = apply_instruction(example.domain, messages[-1]["content"], instructions)
  if system_prompt is not None and messages[0]["role"] != "system":
    messages.insert(0, {"role": "system", "content": system_prompt})
  return messages


def tokenizer_name(tokenizer: Any) -> str:
  """The tokenizer's path or hub id (for error messages), else its class name."""
  return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def check_chat_template(tokenizer: Any) -> None:
  """Raises ChatTemplateError unless `tokenizer` has a chat template."""
  if not hasattr(tokenizer, "apply_chat_template"):
    raise ChatTemplateError(f"tokenizer {tokenizer_name(tokenizer)!r} has no apply_chat_template: pass a "
                            "transformers tokenizer (AutoTokenizer.from_pretrained(<model dir>))")
  if not getattr(tokenizer, "chat_template", None):
    raise ChatTemplateError(
        f"tokenizer {tokenizer_name(tokenizer)!r} has no chat template: load the instruct/chat model's tokenizer "
        "(its tokenizer_config.json carries 'chat_template'), or set tokenizer.chat_template = "
        "prorl_jax.data.CHATML_TEMPLATE for a ChatML model")


def encode_messages(tokenizer: Any, messages: Sequence[Mapping[str, str]], **template_kwargs: Any) -> list[int]:
  """Token ids of `messages` rendered by the chat template, ending with the assistant generation prompt."""
  check_chat_template(tokenizer)
  out = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                      return_dict=False, **template_kwargs)
  if isinstance(out, Mapping):  # Older transformers ignore return_dict=False.
    out = out["input_ids"]
  return [int(t) for t in out]


def encode_prompt(tokenizer: Any, example: Example, *, system_prompt: str | None = None,
                  instructions: Mapping[str, str] | None = DEFAULT_INSTRUCTIONS,
                  **template_kwargs: Any) -> list[int]:
  """Prompt token ids `[prompt_len]` for `example`: `build_messages` through `tokenizer.apply_chat_template`.

  Extra keyword arguments go to the chat template (e.g. `enable_thinking=False` for Qwen3 templates).
  """
  try:
    messages = build_messages(example, system_prompt=system_prompt, instructions=instructions)
  except DataError as e:
    raise e.at(f"example {example.id!r}") from None
  return encode_messages(tokenizer, messages, **template_kwargs)
