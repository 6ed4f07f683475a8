"""Reading params.yaml: the one loader (`load_params`) and the checks every value goes through.

Unknown keys are an error that names them: a typo in params.yaml must not be silently ignored.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from prefsynth.config.params import Params
from prefsynth.config.prompts import PromptsConfig

# Every value is checked against its field's type hint when params.yaml is read (pydantic, strict:
# no "2" for an int, no 1 for a bool; an int is fine for a float, and YAML 1.1's `1e-4`, which it
# reads as a string, is read as the number it means). A bad value is one line naming the dotted
# key, the value and what is allowed, before any stage starts.

# counts that must be >= 1 wherever a field of that name appears (plus *_per_batch, *_batch_size)
_AT_LEAST_ONE = {"num_shards", "batch_size", "n", "n_prompts", "max_new_tokens", "max_prompt_chars", "rollouts",
                 "breadth", "passes", "max_concurrency", "torch_threads", "direct_num_workers", "n_layer", "n_embd",
                 "n_head", "n_positions"}
_AT_LEAST_ZERO = {"max_retries", "temperature", "heartbeat_s", "timeout_s"}


def _allowed(hint) -> str:
    """What a type hint allows, in words: 'an integer or null'."""
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
             dict: "a mapping", type(None): "null"}
    import types

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_allowed(a) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (list, tuple, set):
        return f"a list ({hint})"
    if origin is dict:
        return f"a mapping ({hint})"
    if dataclasses.is_dataclass(hint):
        return f"a group of keys ({hint.__name__})"
    return words.get(hint, str(hint))


def _adapter(hint):
    from pydantic import ConfigDict, TypeAdapter

    key = repr(hint)
    cache = _adapter.__dict__.setdefault("cache", {})
    if key not in cache:
        cache[key] = TypeAdapter(hint, config=ConfigDict(strict=True, arbitrary_types_allowed=True))
    return cache[key]


def _accepts_float(hint) -> bool:
    return hint is float or float in typing.get_args(hint)


def _check_value(dotted: str, name: str, value, hint):
    """The value as the code will see it, or a ValueError naming the key, the value and what is allowed."""
    from pydantic import ValidationError

    if isinstance(value, str) and _accepts_float(hint):
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept it as the number it means
        try:
            value = float(value)
        except ValueError:
            pass
    try:
        _adapter(hint).validate_python(value)
    except ValidationError:
        raise ValueError(f"params.yaml: '{dotted}' is {value!r}; allowed: {_allowed(hint)}") from None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and name.endswith("_fraction") and not 0 <= value <= 1:
        raise ValueError(f"params.yaml: '{dotted}' is {value!r}; allowed: a fraction in [0, 1]")
    if number and (name in _AT_LEAST_ONE or name.endswith(("_per_batch", "_batch_size"))) and value < 1:
        raise ValueError(f"params.yaml: '{dotted}' is {value!r}; allowed: {_allowed(hint)} >= 1")
    if number and name in _AT_LEAST_ZERO and value < 0:
        raise ValueError(f"params.yaml: '{dotted}' is {value!r}; allowed: {_allowed(hint)} >= 0")
    return value


def _build(cls, data: dict | None, where: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"params.yaml: '{where or 'top level'}' is {data!r}; allowed: a group of keys "
                         f"({cls.__name__}: {', '.join(f.name for f in dataclasses.fields(cls))})")
    data = dict(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names, key=str)
    if unknown:
        raise ValueError(f"params.yaml: unknown key(s) {unknown} in '{where}'; known: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        dotted = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value, dotted)
        else:
            value = _check_value(dotted, f.name, value, hint)
        kwargs[f.name] = value
    if cls is PromptsConfig and "task" in kwargs:
        from prefsynth.tasks import TASKS  # lazily: tasks import heavier modules

        if kwargs["task"] not in TASKS:
            raise ValueError(f"params.yaml: '{where}.task' is {kwargs['task']!r}; allowed: one of {sorted(TASKS)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"params.yaml: invalid '{where or 'top level'}': {err}") from err


def load_params(path: str | Path | None = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read params.yaml (None: the built-in defaults); keys the code does not know are an error.

    A path that does not exist is an error naming it: running the built-in default instead of the
    user's file would be a silent, expensive mistake.
    """
    if path is None:
        raw = {}
    else:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"params file not found: {str(path)!r} (cwd {Path.cwd()}); pass --params "
                                    "with an existing file")
        try:
            raw = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"params file {str(path)!r} is not valid YAML: {' '.join(str(err).split())}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ValueError(f"params file {str(path)!r}: the top level must be a mapping of keys, got {raw!r}")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    params = _build(Params, raw, "")
    # the stage runner reads the dead-letter limit of the params this process loaded (pipelines/stage.py)
    load_params.last_loaded = params
    return params


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
