"""Tests for prorl_jax.data.formatting (instructions, chat messages, chat-template encoding) and the byte tokenizer."""

import pytest

from prorl_jax.data import (CHATML_TEMPLATE, DEFAULT_INSTRUCTIONS, ChatTemplateError, Example, build_messages,
                            byte_chat_tokenizer, encode_prompt)

CODE_GT = {"inputs": ["1\n"], "outputs": ["1\n"]}
TRUTH = {"math": "4", "code": CODE_GT, "stem": "A", "ifeval": {"instruction_id_list": ["punctuation:no_comma"]},
         "logic": {"task": "chain_sum", "entry": {"question": "q", "answer": "1", "metadata": {}}}}


@pytest.fixture(scope="module")
def tokenizer():
  return byte_chat_tokenizer()


def _ex(domain, prompt="Solve it.", **kw):
  return Example(id="e", domain=domain, prompt=prompt, ground_truth=TRUTH[domain], **kw)


def test_math_instruction_is_prorl_suffix():
  (msg,) = build_messages(_ex("math", "What is 2+2?"))
  assert msg == {"role": "user", "content": "What is 2+2? Let's think step by step and output the final answer "
                                            "within \\boxed{}."}


@pytest.mark.parametrize("domain, marker", [("logic", "<answer></answer>"), ("code", "```python"),
                                            ("stem", "\\boxed{}"), ("math", "\\boxed{}")])
def test_each_domain_states_its_answer_format(domain, marker):
  content = build_messages(_ex(domain))[-1]["content"]
  assert content.startswith("Solve it.") and marker in content and content != "Solve it."


def test_ifeval_prompt_is_unchanged():
  assert build_messages(_ex("ifeval", "Write a poem. Do not use commas.")) == [
      {"role": "user", "content": "Write a poem. Do not use commas."}]


def test_instruction_not_repeated_when_already_present():
  once = build_messages(_ex("math", "What is 2+2?"))[-1]["content"]
  assert build_messages(_ex("math", once))[-1]["content"] == once
  code_once = build_messages(_ex("code"))[-1]["content"]
  assert build_messages(_ex("code", code_once))[-1]["content"] == code_once


def test_system_prompt_and_messages():
  msgs = build_messages(_ex("stem"), system_prompt="Be brief.")
  assert msgs[0] == {"role": "system", "content": "Be brief."} and len(msgs) == 2
  chat = Example(id="c", domain="math", ground_truth="1", messages=[
      {"role": "system", "content": "own"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
      {"role": "user", "content": "1?"}])
  out = build_messages(chat, system_prompt="ignored")
  assert [m["role"] for m in out] == ["system", "user", "assistant", "user"] and out[0]["content"] == "own"
  assert out[1]["content"] == "a" and out[3]["content"].startswith("1? Let's think step by step")
  assert chat.messages[3]["content"] == "1?"  # The example itself is not modified.


def test_custom_and_disabled_instructions():
  custom = {"math": "Problem: {prompt}\nAnswer in \\boxed{}."}
  assert build_messages(_ex("math", "1+1?"), instructions=custom)[0]["content"] == "Problem: 1+1?\nAnswer in \\boxed{}."
  assert build_messages(_ex("code"), instructions=custom)[0]["content"] == "Solve it."  # Domain not in the map.
  assert build_messages(_ex("math"), instructions=None)[0]["content"] == "Solve it."
  with pytest.raises(ValueError, match=r"must contain '\{prompt\}' exactly once"):
    build_messages(_ex("math"), instructions={"math": "no slot"})
  with pytest.raises(ValueError, match="unknown domains"):
    build_messages(_ex("math"), instructions={"maths": "{prompt}"})


def test_encode_prompt_matches_chatml_reference(tokenizer):
  ex = _ex("logic", "Héllo wörld: 3 × 4 = ? 数学")
  ids = encode_prompt(tokenizer, ex, system_prompt="sys")
  content = build_messages(ex)[-1]["content"]
  # Reference: ChatML written by hand; byte tokens are the UTF-8 bytes, specials have their own ids.
  im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
  def block(role, text):
    return [im_start] + list(f"{role}\n{text}".encode()) + [im_end] + list(b"\n")
  expected = block("system", "sys") + block("user", content) + [im_start] + list(b"assistant\n")
  assert ids == expected
  assert tokenizer.decode(ids) == (f"<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n"
                                   "<|im_start|>assistant\n")


def test_encode_prompt_without_chat_template_names_tokenizer():
  tok = byte_chat_tokenizer()
  tok.chat_template = None
  tok.name_or_path = "/models/base-model"
  with pytest.raises(ChatTemplateError, match=r"tokenizer '/models/base-model' has no chat template.*CHATML_TEMPLATE"):
    encode_prompt(tok, _ex("math"))
  tok.chat_template = CHATML_TEMPLATE
  assert encode_prompt(tok, _ex("math"))[-1] == ord("\n")
  with pytest.raises(ChatTemplateError, match="has no apply_chat_template"):
    encode_prompt(object(), _ex("math"))


def test_byte_tokenizer_round_trips_text(tokenizer):
  text = "naïve café — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 <think>x</think>"
  ids = tokenizer.encode(text, add_special_tokens=False)
  assert tokenizer.decode(ids) == text
  assert tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id) == "<|im_end|>"
  assert tokenizer.convert_ids_to_tokens(tokenizer.pad_token_id) == "<|endoftext|>"
  assert len(tokenizer) == 261 and max(ids) < len(tokenizer)


def test_default_instructions_cover_all_domains():
  assert set(DEFAULT_INSTRUCTIONS) == {"math", "code", "logic", "stem", "ifeval"}
  assert all(t.count("{prompt}") == 1 for t in DEFAULT_INSTRUCTIONS.values())
