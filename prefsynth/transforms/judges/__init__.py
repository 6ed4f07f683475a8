"""LLM judges over the backend protocol: P(True), step confidence, pointwise Likert, pairwise A/B, TICK
checklists.

One module per judge (p_true, step_confidence, pointwise, pairwise, tick) over `base` (targets, rows, failures,
score mode), `templates` (loading, validation, Jinja2 rendering) and `parsing` (strict verdict
and checklist parsing); this module re-exports their public names.

Pure core (no Beam): functions take a backend (`generate` + `score`), the targets to judge and
the templates, and return label rows (schema LABELS) and failures (dead-letter fields). The
Beam shell (transforms/label_beam.py) batches targets and emits the failures as dead letters.

Two ways to get a verdict out of a judge:
- `score` mode (constrained choice): the log-prob of every allowed option after the prompt
  (`1`..`5`, `A`/`B`, `yes`/`no`) via `backend.score`, normalised over the options. The verdict
  is the most likely option and `confidence` its probability: a distribution, so calibration
  can be measured, and it cannot be unparseable.
- `generate` mode (free text): the judge writes `Feedback: ... [RESULT] n`; the text is parsed
  strictly (exactly one `[RESULT]`, a non-empty feedback, a verdict from the allowed set).
  Anything else is a failure with the raw text — never a None label. Free text carries no
  probability of its own: `confidence` is null there.

P(True) ("Language Models (Mostly) Know What They Know") is always a score: p(yes)/(p(yes)+p(no)).
A task whose policy was trained on its own self-evaluation format (arith: `...\\nOK? ` -> `yes`)
is asked in that format; other tasks get the generic template.

Every labeler's `score` is its probability that the target is correct (pointwise: (E[Likert]-1)/4;
pairwise: P(A better than B), averaged over both presentation orders), which is what the
quality report (prefsynth/calibration.py) measures against ground truth.
"""

from prefsynth.transforms.judges.base import (AB, JUDGES, LABELERS, LIKERT, MODES, SCORE_SUFFIX, YES_NO, Failure,
                                              JudgeResult, Target, backend_failure, choice_probs, context_check,
                                              fmt_probs, generate_greedy, label_row, normalise, question_of,
                                              response_of, score_or_fail)
from prefsynth.transforms.judges.pairwise import PairTarget, PairVerdict, combine_orders, judge_pairwise, make_pairs
from prefsynth.transforms.judges.parsing import (RESULT_TAG, TICK_PREFILL, JudgeParseError, drop_cut_line,
                                                 parse_questions, parse_verdict)
from prefsynth.transforms.judges.p_true import judge_p_true, native_self_eval, p_true_prompts
from prefsynth.transforms.judges.pointwise import judge_pointwise
from prefsynth.transforms.judges.step_confidence import (judge_step_confidence, judged_spans, result_split, step_confidences,
                                                        step_spans)
from prefsynth.transforms.judges.templates import (SHIPPED_TEMPLATES, TEMPLATE_FIELDS, Template, load_templates,
                                                   placeholders, to_jinja)
from prefsynth.transforms.judges.tick import judge_tick

__all__ = [
    "AB", "JUDGES", "LABELERS", "LIKERT", "MODES", "RESULT_TAG", "SCORE_SUFFIX", "SHIPPED_TEMPLATES",
    "TEMPLATE_FIELDS", "TICK_PREFILL", "YES_NO", "Failure", "JudgeParseError", "JudgeResult", "PairTarget",
    "PairVerdict", "Target", "Template", "backend_failure", "choice_probs", "combine_orders", "context_check",
    "drop_cut_line", "fmt_probs", "generate_greedy", "judge_p_true", "judge_pairwise", "judge_pointwise",
    "judge_step_confidence", "judge_tick", "judged_spans", "result_split", "step_confidences", "label_row", "load_templates", "make_pairs", "native_self_eval", "normalise", "p_true_prompts",
    "parse_questions", "parse_verdict", "placeholders", "question_of", "response_of", "score_or_fail", "step_spans", "to_jinja",
]
