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
    extra_train_prompts: int = _f(0, "arith: more problems from a stream of their own, all in the train split (a "
                                  "copy of a held-out problem is dropped): rounds see more prompts while the "
                                  "validation and test prompts, and so policy-0, stay as they are.")
    extra_heldout_prompts: int = _f(0, "arith: more problems from a stream of their own, all held out, split between "
                                    "test and validation in the ratio test_fraction : validation_fraction (a copy "
                                    "of a train problem is dropped): narrower intervals on every held-out number "
                                    "while the train prompts stay as they are (policy-0 is retrained: it never "
                                    "sees a held-out problem). Evaluate reads at most evaluate.max_prompts of each.")
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

    def __post_init__(self):
        for name in ("extra_train_prompts", "extra_heldout_prompts"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"prompts.{name} must be >= 0, got {value!r}")
            if value and self.source != "arith":
                raise ValueError(f"prompts.{name} generates arith problems: it needs prompts.source arith "
                                 f"(got {self.source!r}); add the prompts to your file instead")
        if self.extra_heldout_prompts and self.test_fraction + self.validation_fraction <= 0:
            raise ValueError("prompts.extra_heldout_prompts splits its problems between test and validation in the "
                             "ratio test_fraction : validation_fraction; both are 0")
