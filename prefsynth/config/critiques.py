"""The critiques stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefsynth.config.fields import option as _f
from prefsynth.config.runner import PolicyConfig


@dataclass
class CritiquesConfig:
    critics: list = _f(["rule", "model"], "Critics to run: rule (exact, arith) and/or model (any backend).")
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

    def __post_init__(self):
        if self.verdict not in ("generate", "score"):
            raise ValueError(f"critiques.verdict must be generate or score, got {self.verdict!r}")
