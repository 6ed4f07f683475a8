"""The label stage and its LLM judges."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefsynth.config.fields import option as _f
from prefsynth.transforms.mc_labels import MCLabelConfig

# what of a step step confidence scores (the judge's and the confidence critic's `span`)
STEP_CONFIDENCE_SPANS = ("line", "result")


@dataclass
class JudgeConfig:
    model: str | None = _f(None, "Judge model (path or served name); null: the policy itself judges (self-judge, "
                           "and self-preference is measured).")
    backend: str | None = _f(None, "Judge backend: transformers | vllm | openai; null: policy.backend. Other backend "
                             "settings (timeouts, dtype, ...) come from policy.*.")
    base_url: str | None = _f(None, "openai judge: server URL; null: policy.base_url.")
    mode: str = _f("score", "Pointwise/pairwise verdicts: score (log-prob of each allowed option via `score`: a "
                   "distribution, never unparseable) or generate (free text `Feedback: ... [RESULT] v`, parsed strictly).")
    template_dir: str | None = _f(None, "Folder whose <name>.txt files replace the shipped judge templates "
                                  "(prefsynth/templates: pointwise, pairwise, p_true, p_true_step, tick_questions, "
                                  "tick_answer); null: shipped ones.")
    p_true_max_responses: int | None = _f(2000, "P(True) for the first N responses by id; null: all.")
    p_true_steps: bool = _f(True, "P(True) of every step prefix too, not only of the whole response.")
    step_confidence_max_responses: int | None = _f(2000, "Step confidence for the first N responses by id; null: "
                                                   "all.")
    step_confidence_span: str = _f("line", "What of each step step confidence scores: line (the whole step) or result "
                                   "(only the number it computes, after its last `=` or `A:`; a pretrained model's line "
                                   "probability is mostly wording: benchmarks/step_confidence.py).")
    pointwise_max_responses: int | None = _f(64, "Likert judgements for the first N responses by id; null: all.")
    pairwise_max_pairs: int | None = _f(32, "A/B judgements (each in both orders) for N pairs (smallest pair ids); "
                                        "null: all.")
    tick_max_prompts: int | None = _f(8, "TICK checklists for the first N prompts by id (all their responses).")
    tick_max_questions: int = _f(5, "Most checklist questions kept per prompt.")
    max_new_tokens: int = _f(256, "Generate mode and TICK questions: longest judge output, in tokens.")
    items_per_batch: int = _f(256, "Judge work items (responses, pairs) per model call batch.")

    def __post_init__(self):
        if self.mode not in ("score", "generate"):
            raise ValueError(f"label.judge.mode must be score or generate, got {self.mode!r}")
        if self.step_confidence_span not in STEP_CONFIDENCE_SPANS:
            raise ValueError(f"label.judge.step_confidence_span must be line or result, got "
                             f"{self.step_confidence_span!r}")


@dataclass
class LabelConfig:
    mc_max_responses: int | None = _f(600, "Monte-Carlo labels for the first N responses (by id); null: all. "
                                      "Verifier labels cover every response.")
    methods: list = _f(["binary", "every"], "MC step labelers: binary (OmegaPRM search), every (Math-Shepherd), "
                       "forward (probe prefixes in order, stop at the first bad one).")
    responses_per_batch: int = _f(64, "Responses whose rollouts share model calls.")
    num_shards: int = _f(2, "Parquet files written for data/labels.")
    mc: MCLabelConfig = field(default_factory=MCLabelConfig,
                              metadata={"help": "Monte-Carlo rollout settings (transforms/mc_labels.py)."})
    judges: list = _f(["p_true", "step_confidence"], "LLM judges to run: p_true (self-evaluation P(yes), responses "
                      "and steps), step_confidence (the judge model's probability of each step, never shown it: "
                      "'no error so far' step labels), pointwise (Likert 1-5), pairwise (A vs B, both orders), tick (checklists).")
    judge: JudgeConfig = field(default_factory=JudgeConfig,
                               metadata={"help": "Which model judges, how, with which templates, on how many targets."})

    def __post_init__(self):
        bad = sorted(set(self.methods) - {"binary", "every", "forward"})
        if bad:
            raise ValueError(f"label.methods: unknown MC method(s) {bad}; known: binary, every, forward")
        unknown = sorted(set(self.judges) - {"p_true", "step_confidence", "pointwise", "pairwise", "tick"})
        if unknown:
            raise ValueError(f"label.judges: unknown judge(s) {unknown}; known: p_true, step_confidence, pointwise, "
                             "pairwise, tick")
