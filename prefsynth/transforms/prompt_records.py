"""Prompt records, pure of Beam: one record from an arith problem or from a parsed input object,
with its stable id and split; a bad record raises PromptError naming the field.
"""

from __future__ import annotations

import json
import math
import unicodedata

from prefsynth.config import PromptsConfig
from prefsynth.ids import content_id, unit_hash
from prefsynth.tasks import arith, get_task

SPLITS = ("train", "validation", "test")  # validation: where every default is chosen; test: read once per run


class PromptError(ValueError):
    """A bad input record; `error_type` and `field` say what is wrong."""

    def __init__(self, error_type: str, message: str, field: str | None = None):
        super().__init__(message)
        self.error_type, self.field = error_type, field


def assign_split(prompt_id: str, seed: int, test_fraction: float, validation_fraction: float = 0.0) -> str:
    """The prompt's split by one hash u in [0, 1): test when u < test_fraction (the same test prompts
    whatever validation_fraction is), validation when u < test_fraction + validation_fraction
    (carved from the train side), else train."""
    u = unit_hash(seed, prompt_id, "split")
    if u < test_fraction:
        return "test"
    return "validation" if u < test_fraction + validation_fraction else "train"


def heldout_split(prompt_id: str, seed: int, test_fraction: float, validation_fraction: float) -> str:
    """A held-out prompt's split (prompts.extra_heldout_prompts): test or validation in the ratio
    test_fraction : validation_fraction, by the same hash as `assign_split`."""
    u = unit_hash(seed, prompt_id, "split")
    return "test" if u * (test_fraction + validation_fraction) < test_fraction else "validation"


def arith_record(problem: arith.ArithProblem, source: str, seed: int, test_fraction: float,
                 validation_fraction: float = 0.0, split: str | None = None) -> dict:
    """A generated problem's record. `split`: None, by hash; "train" forces it (prompts.extra_train_prompts);
    "heldout": test or validation by hash (prompts.extra_heldout_prompts)."""
    question = problem.question
    prompt_id = content_id(arith.NAME, question)
    if split is None:
        split = assign_split(prompt_id, seed, test_fraction, validation_fraction)
    elif split == "heldout":
        split = heldout_split(prompt_id, seed, test_fraction, validation_fraction)
    return {
        "prompt_id": prompt_id,
        "split": split,
        "task": arith.NAME,
        "prompt": problem.prompt,
        "messages": [{"role": "user", "content": problem.prompt}],
        "question": question,
        "reference_answer": str(problem.answer),
        "reference_solution": problem.solution,
        "source": source,
        "metadata": json.dumps({"n_ops": len(problem.ops)}),
    }


def check_text(text: str, where: str, name: str, allow_nul: bool = False) -> str:
    """`text` if it can be stored: a lone surrogate (JSON `"\\ud800"`) cannot be encoded as UTF-8
    (Arrow, Parquet and hashing would fail on it) and a NUL is no part of a prompt; PromptError
    `invalid_text` naming the field otherwise."""
    if text.isascii():  # O(1) in CPython: ASCII text has no surrogates, only a NUL is left to look for
        if allow_nul or "\x00" not in text:
            return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise PromptError("invalid_text", f"{where}: field '{name}' has a lone surrogate "
                          f"(\\u{ord(text[err.start]):04x} at character {err.start}), not encodable as UTF-8",
                          name) from None
    if not allow_nul and "\x00" in text:
        raise PromptError("invalid_text", f"{where}: field '{name}' contains a NUL character "
                          f"(at character {text.index(chr(0))})", name)
    return text


def _check_utf8(value, where: str, name: str) -> None:
    if isinstance(value, InvalidUtf8):
        raise PromptError("invalid_utf8", f"{where}: field '{name}' is not valid UTF-8 text", name)


def has_visible_text(text: str) -> bool:
    """Anything but whitespace, control and format characters (zero-width spaces, BOMs)?"""
    if text and "!" <= text[0] <= "~":  # a printable ASCII first character (the usual case) is visible
        return True
    return any(unicodedata.category(c)[0] not in "CZ" for c in text)


def _text_field(obj: dict, name: str, where: str, required: bool, bad_value: str = "wrong_type") -> str | None:
    if name not in obj or obj[name] is None:
        if required:
            raise PromptError("missing_field", f"{where}: field '{name}' is missing", name)
        return None
    value = obj[name]
    if type(value) is str:  # the usual case first: a plain str is neither InvalidUtf8 nor a number
        return check_text(value, where, name)
    _check_utf8(value, where, name)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PromptError("wrong_type", f"{where}: field '{name}' must be a string, got {type(value).__name__}", name)
    if isinstance(value, float) and not math.isfinite(value):  # JSON NaN/Infinity, a float NaN in Parquet
        raise PromptError(bad_value, f"{where}: field '{name}' is {value!r}, not a value", name)
    return check_text(value, where, name) if isinstance(value, str) else str(value)


def _metadata_value(value, where: str, key: str, notes: list | None):
    """A metadata value as JSON can hold it: NaN/Infinity become null (counted in `notes`), UTF-8
    bytes become text; un-encodable text and non-UTF-8 bytes are PromptErrors naming the field."""
    if isinstance(value, float) and not math.isfinite(value):
        if notes is not None:
            notes.append("metadata_non_finite_as_null")
        return None
    if isinstance(value, str):
        return check_text(value, where, f"metadata.{key}", allow_nul=True)
    _check_utf8(value, where, key)
    if isinstance(value, (bytes, bytearray)):
        try:
            return check_text(bytes(value).decode("utf-8"), where, f"metadata.{key}", allow_nul=True)
        except UnicodeDecodeError:
            raise PromptError("wrong_type", f"{where}: field '{key}' (metadata) holds {len(value)} bytes of "
                              "binary data that are not UTF-8 text", key) from None
    if isinstance(value, dict):
        return {check_text(str(k), where, f"metadata.{key}", allow_nul=True): _metadata_value(v, where, key, notes)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_metadata_value(v, where, key, notes) for v in value]
    return value


def metadata_json(extra: dict, where: str, notes: list | None = None) -> str | None:
    """The fields a record has beside the configured ones, as one JSON object (strict JSON: no NaN)."""
    if not extra:
        return None
    clean = {check_text(str(k), where, "metadata", allow_nul=True): _metadata_value(v, where, str(k), notes)
             for k, v in extra.items()}
    text = json.dumps(clean, sort_keys=True, ensure_ascii=False, default=str, allow_nan=False)
    return check_text(text, where, "metadata", allow_nul=True)  # what `default=str` made of odd objects


def _used_fields(cfg: PromptsConfig) -> frozenset:
    """The configured input fields (the others go to metadata); one set per configuration."""
    key = (cfg.question_field, cfg.answer_field, cfg.id_field, cfg.split_field)
    used = _USED_FIELDS.get(key)
    if used is None:
        used = _USED_FIELDS[key] = frozenset(key)
    return used


_USED_FIELDS: dict = {}


def file_record(obj, where: str, cfg: PromptsConfig, seed: int, notes: list | None = None,
                renderer=None) -> dict:
    """One prompt record from a parsed input object; raises PromptError naming the field.
    `notes` (if given) collects what was kept though odd (e.g. `without_reference`), to be counted.
    `renderer` (a prompting.PromptRenderer, if given) renders `prompt` and `messages` as the stage
    stores them; without one they are the task's plain prompt and the bare question as one user turn."""
    if not isinstance(obj, dict):
        raise PromptError("not_an_object", f"{where}: expected a JSON object, got {type(obj).__name__}")
    qfield = cfg.question_field
    question = obj.get(qfield)
    if type(question) is not str:  # the usual case (a plain str) skips these checks
        if question is None:
            raise PromptError("missing_field", f"{where}: field '{qfield}' is missing", qfield)
        _check_utf8(question, where, qfield)
        if not isinstance(question, str):
            raise PromptError("wrong_type", f"{where}: field '{qfield}' must be a string, "
                              f"got {type(question).__name__}", qfield)
    question = check_text(question, where, qfield).strip()
    if not question:
        raise PromptError("empty_text", f"{where}: field '{qfield}' is empty", qfield)
    if not has_visible_text(question):
        raise PromptError("empty_text", f"{where}: field '{qfield}' has only whitespace, control "
                          "or format characters", qfield)
    if len(question) > cfg.max_prompt_chars:
        raise PromptError("too_long", f"{where}: field '{qfield}' has {len(question)} chars "
                          f"> max_prompt_chars={cfg.max_prompt_chars}", qfield)
    task = get_task(cfg.task)
    answer = solution = None
    raw_answer = _text_field(obj, cfg.answer_field, where, required=False, bad_value="bad_answer") \
        if cfg.answer_field else None
    if raw_answer is not None:
        # the task parses its references (`#### n`, `A: n`, `\boxed{}`): a reference it cannot read
        # is a dead letter, never a whole worked solution stored as the answer
        try:
            answer, solution = task.parse_reference(raw_answer)
        except ValueError as err:
            raise PromptError("bad_answer", f"{where}: field '{cfg.answer_field}': {err}", cfg.answer_field)
    elif task.needs_reference:
        what = f"field '{cfg.answer_field}' is missing" if cfg.answer_field else "prompts.answer_field is null"
        raise PromptError("missing_reference", f"{where}: {what}, and task {cfg.task!r} needs a reference answer "
                          "(use task: chat for prompts judged without one)", cfg.answer_field)
    elif notes is not None:
        notes.append("without_reference")  # kept: the task judges prompts without a reference
    if cfg.id_field:
        prompt_id = _text_field(obj, cfg.id_field, where, required=True).strip()
        if not prompt_id:
            raise PromptError("empty_text", f"{where}: field '{cfg.id_field}' is empty", cfg.id_field)
    else:
        prompt_id = content_id(cfg.task, question)
    split = None
    if cfg.split_field:
        split = _text_field(obj, cfg.split_field, where, required=False)
        if split is not None and split not in SPLITS:
            raise PromptError("bad_split", f"{where}: field '{cfg.split_field}' is {split!r}, not one of {SPLITS}",
                              cfg.split_field)
        if split is None and notes is not None:
            notes.append("split_by_hash")  # kept: this record has no split field, its split is by hash
    used = _used_fields(cfg)
    # fields beside the configured ones (usually none: a set comparison, no dict built)
    metadata = None if obj.keys() <= used else \
        metadata_json({k: v for k, v in obj.items() if k not in used}, where, notes)
    if renderer is not None:
        prompt, messages = renderer.render(task, question)
    else:
        prompt, messages = task.format_prompt(question), [{"role": "user", "content": question}]
    return {
        "prompt_id": prompt_id,
        "split": split or assign_split(prompt_id, seed, cfg.test_fraction, cfg.validation_fraction),
        "task": cfg.task,
        "prompt": prompt,
        "messages": messages,
        "question": question,
        "reference_answer": answer,
        "reference_solution": solution,
        "source": where,
        "metadata": metadata,
    }


def parse_json_line(raw: bytes, where: str):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PromptError("invalid_utf8", f"{where}: not valid UTF-8 ({err.reason} at byte {err.start})")
    text = text.removeprefix("\ufeff")  # a byte-order mark (files saved on Windows) is no part of the JSON
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise PromptError("invalid_json", f"{where}: invalid JSON ({err.msg} at column {err.colno})")
    except ValueError as err:  # an integer of more digits than Python converts
        raise PromptError("invalid_json", f"{where}: invalid JSON ({err})")
    except RecursionError:
        raise PromptError("invalid_json", f"{where}: invalid JSON (nested too deeply)") from None


class InvalidUtf8(bytes):
    """The bytes of a Parquet string value that is not valid UTF-8 (Arrow does not check it when
    reading): file_record makes such a field an `invalid_utf8` dead letter naming the row."""
