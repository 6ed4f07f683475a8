"""The critiques stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefsynth.config.fields import option as _f
from prefsynth.config.label import STEP_CONFIDENCE_SPANS
from prefsynth.config.runner import PolicyConfig


@dataclass
class ConfidenceCriticConfig:
    model: str | None = _f(None, "Model whose step confidence critiques (path or served name); null: the policy "
                           "that wrote the responses.")
    backend: str | None = _f(None, "Its backend: transformers | vllm | openai; null: policy.backend.")
    base_url: str | None = _f(None, "openai backend: server URL; null: policy.base_url.")
    span: str = _f("line", "What of each step is scored: line (the whole step) or result (the number it computes; "
                   "for pretrained models, label.judge.step_confidence_span).")
    use_reference: bool = _f(True, "Check the final answer against the reference first: right -> 'correct', wrong -> "
                             "the least confident step is the located one (the Step-DPO setting). false, or no "
                             "reference: the first step below `threshold`, else 'correct'.")
    threshold: float = _f(0.9, "Without a reference: a step whose confidence is below this is the located one "
                          "(0.9: chosen on validation, benchmarks/confidence_critic.py).")
    recompute_tokens: int = _f(24, "The critique shows the model's greedy recomputation of the located step, up to "
                               "this many tokens; 0: none.")
    max_responses: int | None = _f(2000, "Confidence critiques for the first N responses by id (null: all).")

    def __post_init__(self):
        if self.span not in STEP_CONFIDENCE_SPANS:
            raise ValueError(f"critiques.confidence_critic.span must be line or result, got {self.span!r}")
        if not 0.0 <= self.threshold <= 1.0 or self.recompute_tokens < 0:
            raise ValueError("critiques.confidence_critic: threshold must lie in [0, 1] and recompute_tokens be >= 0, "
                             f"got {self.threshold!r}, {self.recompute_tokens!r}")


@dataclass
class CritiquesConfig:
    critics: list = _f(["rule", "model", "confidence"], "Critics to run: rule (exact, arith), model (a critic model "
                       "prompted with the template, any backend), confidence (the policy's own step confidence: "
                       "its least likely step, no critic model).")
    template: str | None = _f(None, "Critic prompt template file ({problem}, {steps}); null: the packaged "
                              "prefsynth/templates/critique.txt.")
    model_critic: PolicyConfig = field(default_factory=lambda: PolicyConfig(batch_size=256), metadata={
        "help": "The model critic's backend (policy.* keys); model null: the run's models/critic."})
    model_max_responses: int | None = _f(2000, "Model critiques for the first N responses by id (null: all); "
                                         "the rule critic covers every response.")
    max_new_tokens: int = _f(128, "Longest model critique, in tokens.")
    verdict: str = _f("generate", "Model critic's verdict: generate (its `Verdict: ...` line, parsed strictly; "
                      "unreadable -> dead letter) | score (its explanation, then the verdict chosen by log-prob "
                      "among 'correct' / 'step N': never unparseable; for small instruct critics).")
    temperature: float = _f(0.0, "Model critic sampling temperature (0: greedy).")
    responses_per_batch: int = _f(256, "Responses per model-critic call.")
    num_shards: int = _f(2, "Parquet files written for data/critiques.")
    confidence_critic: ConfidenceCriticConfig = field(default_factory=ConfidenceCriticConfig, metadata={
        "help": "The confidence critic (transforms/confidence_critic.py)."})

    def __post_init__(self):
        if self.verdict not in ("generate", "score"):
            raise ValueError(f"critiques.verdict must be generate or score, got {self.verdict!r}")
