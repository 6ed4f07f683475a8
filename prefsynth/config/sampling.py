"""The generate and mcts stages."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefsynth.config.fields import option as _f
from prefsynth.transforms.mcts import MCTSConfig


@dataclass
class GenerateConfig:
    split: str = _f("train", "Which prompts to sample for: train, test or all.")
    max_prompts: int | None = _f(None, "Use only the first N prompts (by id); null: all.")
    fresh_prompts_per_round: bool = _f(False, "Round r samples the r-th block of max_prompts prompts by id "
                                       "instead of the first (no prompt seen twice; raise "
                                       "prompts.extra_train_prompts for enough of them).")
    n: int = _f(8, "Samples per prompt.")
    temperature: float = _f(0.8, "Sampling temperature (0: greedy).")
    top_p: float = _f(1.0, "Nucleus sampling mass.")
    max_new_tokens: int = _f(64, "Longest completion, in tokens.")
    stop: list = _f([], "Stop strings (the text ends before them).")
    truncate_long_prompts: bool = _f(False, "Prompts too long for the context: false sends them to dead letters, "
                                     "true keeps their last tokens and marks truncated_prompt.")
    num_shards: int = _f(2, "Parquet files written for data/responses.")
    resume: bool = _f(True, "Keep finished batches in <out>.resume/ so a crashed run resumes where it stopped.")


@dataclass
class MCTSStageConfig:
    split: str = _f("train", "Which prompts get a search tree: train, test or all.")
    max_prompts: int | None = _f(400, "Search the first N prompts (by id); null: all.")
    fresh_prompts_per_round: bool = _f(False, "Round r searches the r-th block of max_prompts prompts by id "
                                       "instead of the first (as generate.fresh_prompts_per_round).")
    trees_per_batch: int = _f(64, "Trees searched together; each model call expands one leaf of each.")
    num_shards: int = _f(2, "Parquet files written for data/trees.")
    search: MCTSConfig = field(default_factory=MCTSConfig,
                               metadata={"help": "The MCTS constants (see transforms/mcts.py MCTSConfig)."})
