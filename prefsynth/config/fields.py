"""The one way to declare an option: a typed dataclass field with a one-line help."""

from __future__ import annotations

import dataclasses
from dataclasses import field


def option(default, help: str):
    """A field with `default` (a fresh copy per instance for a dict or list) and its help text."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def keys_in_order(*names: str):
    """Class decorator: the dataclass's fields in this order (params.yaml's), inherited ones included.

    A group that extends a base gets the base's fields first; its keys are still listed (in the
    card's params, in error messages) in the order params.yaml has them. `names` must be exactly
    the fields.
    """
    def apply(cls):
        fields = cls.__dataclass_fields__
        if sorted(names) != sorted(fields):
            raise TypeError(f"{cls.__name__}: keys_in_order names {sorted(set(names) ^ set(fields))} wrongly")
        cls.__dataclass_fields__ = {n: fields[n] for n in names}
        assert [f.name for f in dataclasses.fields(cls)] == list(names)
        return cls
    return apply
