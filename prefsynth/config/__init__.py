"""Typed configuration, one dataclass per params.yaml group, read by `load_params`.

Every option is a typed field with a one-line help (the `help` metadata), in the style of TRL's
config dataclasses. The groups live beside each other by stage:

    fields.py     `option` (a field with its help), `keys_in_order`
    runner.py     beam, policy               prompts.py    prompts
    tiny.py       TinyModelConfig: bootstrap, critic (the two tiny models trained here)
    sampling.py   generate, mcts             label.py      label, label.judge
    critiques.py  critiques                  candidates.py candidates
    pairs.py      pairs, pairs.upo           train.py      train, evaluate
    card.py       card
    params.py     Params (all of params.yaml)
    loading.py    load_params, to_dict and the checks of every value

Every name is importable from `prefsynth.config`.
"""

from prefsynth.config.candidates import CandidatesConfig
from prefsynth.config.card import CardConfig
from prefsynth.config.critiques import CritiquesConfig
from prefsynth.config.label import JudgeConfig, LabelConfig
from prefsynth.config.loading import load_params, to_dict
from prefsynth.config.pairs import PairsConfig, UPOConfig
from prefsynth.config.params import Params
from prefsynth.config.prompts import PromptsConfig
from prefsynth.config.runner import BeamConfig, PolicyConfig
from prefsynth.config.sampling import GenerateConfig, MCTSStageConfig
from prefsynth.config.tiny import BootstrapConfig, CriticConfig, TinyModelConfig
from prefsynth.config.train import EvaluateConfig, TrainConfig
from prefsynth.prompting import PromptingConfig
from prefsynth.tasks.arith import ArithConfig
from prefsynth.transforms.mc_labels import MCLabelConfig
from prefsynth.transforms.mcts import MCTSConfig

__all__ = [
    "ArithConfig", "BeamConfig", "BootstrapConfig", "CandidatesConfig", "CardConfig", "CriticConfig", "CritiquesConfig",
    "EvaluateConfig", "GenerateConfig", "JudgeConfig", "LabelConfig", "MCLabelConfig", "MCTSConfig", "MCTSStageConfig",
    "PairsConfig", "Params", "PolicyConfig", "PromptingConfig", "PromptsConfig", "TinyModelConfig", "TrainConfig",
    "UPOConfig", "load_params", "to_dict",
]
