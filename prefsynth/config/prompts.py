"""The prompts stage."""

from __future__ import annotations

from dataclasses import dataclass

from prefsynth.config.fields import option as _f


@dataclass
class PromptsConfig:
    source: str = _f("arith", "Where prompts come from: arith (built-in generator), jsonl or parquet.")
    path: str | None = _f(None, "Input file for jsonl/parquet sources.")
    task: str = _f("arith", "Problem domain of file sources: arith, gsm8k, math or chat.")
    n_prompts: int = _f(3000, "arith: how many problems to generate (before de-duplication).")
    test_fraction: float = _f(0.2, "Fraction of prompts (by hash of id) held out as the test split.")
    validation_fraction: float = _f(0.1, "Fraction of prompts (by the same hash, carved from the train side: the "
                                    "test prompts do not change) held out as the validation split, on which every "
                                    "default is chosen; test is read once per run. Past 1 - test_fraction: the rest.")
    question_field: str = _f("question", "File sources: field holding the question text.")
    answer_field: str | None = _f("answer", "File sources: field holding the reference answer (null: none).")
    id_field: str | None = _f(None, "File sources: field holding a record id (null: content hash).")
    split_field: str | None = _f(None, "File sources: field holding the split (null: by hash).")
    max_prompt_chars: int = _f(8000, "Longer questions go to dead letters.")
    num_shards: int = _f(2, "Parquet files written for data/prompts.")
