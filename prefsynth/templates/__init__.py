"""Judge prompt templates shipped with prefsynth (plain text files users can copy and edit).

Placeholders are `{{name}}`; `{{#name}}...{{/name}}` keeps a block only when `name` has a value
(e.g. the reference answer). Point `label.judge.template_dir` at a folder holding files of the
same names to override any of them. See prefsynth/transforms/judges/templates.py for which names each
template may use.
"""
