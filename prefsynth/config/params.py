"""All of params.yaml: the global keys and one group per stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefsynth.config.candidates import CandidatesConfig
from prefsynth.config.card import CardConfig
from prefsynth.config.critiques import CritiquesConfig
from prefsynth.config.fields import option as _f
from prefsynth.config.label import LabelConfig
from prefsynth.config.pairs import PairsConfig
from prefsynth.config.prompts import PromptsConfig
from prefsynth.config.runner import BeamConfig, PolicyConfig
from prefsynth.config.sampling import GenerateConfig, MCTSStageConfig
from prefsynth.config.tiny import BootstrapConfig, CriticConfig
from prefsynth.config.train import EvaluateConfig, TrainConfig
from prefsynth.prompting import PromptingConfig
from prefsynth.tasks.arith import ArithConfig


@dataclass
class Params:
    seed: int = _f(1234, "Global seed: every random draw derives from (seed, record id, purpose).")
    max_dead_fraction: float = _f(0.5, "A stage fails (after writing its dead letters) when more than this share of "
                                  "its input records are dead letters, or when its output is empty; 1: never.")
    beam: BeamConfig = field(default_factory=BeamConfig)
    arith: ArithConfig = field(default_factory=ArithConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    prompting: PromptingConfig = field(default_factory=PromptingConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    mcts: MCTSStageConfig = field(default_factory=MCTSStageConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    card: CardConfig = field(default_factory=CardConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    critiques: CritiquesConfig = field(default_factory=CritiquesConfig)
    iterations: dict = _f({"1": {"from": 0}},
                          "On-policy rounds (dvc.yaml foreach), `<round>: {from: <round-1>}` each: round r samples "
                          "and searches with models/policy-<from> and trains models/policy-<round>.")
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def __post_init__(self):
        for key, spec in (self.iterations or {}).items():
            # DVC's foreach needs string keys ("1"); an unquoted 1 silently yields no stages at all
            if not (isinstance(key, str) and key.isdigit()) or not isinstance(spec, dict) or \
                    not isinstance(spec.get("from"), int) or not 0 <= spec["from"] < int(key):
                raise ValueError(f"params.yaml: iterations entry {key!r}: {spec!r}; expected \"<round>\": "
                                 "{from: <earlier round>} with the round quoted, e.g. \"2\": {from: 1}")
