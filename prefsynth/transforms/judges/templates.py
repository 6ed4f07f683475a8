"""Judge prompt templates: loading, validation, rendering (Jinja2).

The shipped templates (prefsynth/templates/*.txt) and the ones a `label.judge.template_dir`
supplies keep their placeholder syntax: `{{name}}` inserts a value (None: nothing) and
`{{#name}}...{{/name}}` keeps its text only when `name` is set (not None, not ""), the newline
after each section tag included in the tag. Such a template is converted once into a Jinja2
template (same `{{ }}` delimiters, StrictUndefined, no autoescape, the trailing newline kept) and
rendered by Jinja2; any other text, braces included, stays literal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
import jinja2.meta

SHIPPED_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

# template name -> (placeholders it must use, placeholders it may use)
TEMPLATE_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    "pointwise": ({"question", "response"}, {"reference"}),
    "pairwise": ({"question", "response_a", "response_b"}, {"reference"}),
    "p_true": ({"question", "response"}, {"reference"}),
    "p_true_step": ({"question", "steps"}, {"reference"}),
    "tick_questions": ({"question"}, {"reference", "max_questions"}),
    "tick_answer": ({"question", "response", "check"}, {"reference"}),
}

# a section is `{{#x}}` + optional newline ... `{{/x}}` + optional newline; a field is `{{x}}`
_TAG_RE = re.compile(r"\{\{#(\w+)\}\}\n?(.*?)\{\{/\1\}\}\n?|\{\{(\w+)\}\}", re.DOTALL)

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


def _literal(text: str) -> str:
    """Template text as Jinja2 source that renders to itself."""
    if not text or not any(s in text for s in ("{{", "{%", "{#", "}}", "%}", "#}")):
        return text
    if "endraw" not in text:
        return "{% raw %}" + text + "{% endraw %}"
    return "{{ " + repr(text) + " }}"


def to_jinja(text: str) -> str:
    """A `{{name}}` / `{{#name}}...{{/name}}` template as Jinja2 source with the same output."""
    out, pos = [], 0
    for m in _TAG_RE.finditer(text):
        out.append(_literal(text[pos:m.start()]))
        if m.group(3):  # field
            out.append("{{ " + m.group(3) + " }}")
        else:  # section: its body may hold fields (sections do not nest)
            out.append("{% if " + m.group(1) + ' != "" %}' + to_jinja(m.group(2)) + "{% endif %}")
        pos = m.end()
    out.append(_literal(text[pos:]))
    return "".join(out)


@lru_cache(maxsize=64)
def _compiled(text: str) -> jinja2.Template:
    return _ENV.from_string(to_jinja(text))


def placeholders(text: str) -> set[str]:
    """Every name a template uses, as a field or a section."""
    return jinja2.meta.find_undeclared_variables(_ENV.parse(to_jinja(text)))


@dataclass(frozen=True)
class Template:
    name: str
    text: str
    source: str  # file it came from (for error messages and the card)

    def __post_init__(self):
        required, optional = TEMPLATE_FIELDS[self.name]
        used = placeholders(self.text)
        unknown, missing = used - required - optional, required - used
        if unknown or missing:
            raise ValueError(f"judge template {self.source}: unknown placeholder(s) {sorted(unknown)}, "
                             f"missing {sorted(missing)}; allowed: {sorted(required | optional)}")

    def render(self, **values) -> str:
        """The template with `values` in; an allowed placeholder left out (or None) renders empty."""
        required, optional = TEMPLATE_FIELDS[self.name]
        context = {k: "" for k in required | optional}
        context.update({k: "" if v is None else str(v) for k, v in values.items()})
        return _compiled(self.text).render(context)


def load_templates(template_dir: str | None = None) -> dict[str, Template]:
    """The shipped templates, each replaced by `<template_dir>/<name>.txt` where that file exists."""
    out = {}
    for name in TEMPLATE_FIELDS:
        path = Path(template_dir) / f"{name}.txt" if template_dir else None
        if path is None or not path.exists():
            path = SHIPPED_TEMPLATES / f"{name}.txt"
        out[name] = Template(name, path.read_text(encoding="utf-8"), str(path))
    return out
