"""The pair classifier's policy features inside Beam: one model pass per batch of texts.

The driver plans the batches (`pair_classifier.batch_plan`: texts sorted by token length, rows per
forward capped by `score_batch_size` and the logits' size); each text carries its rank in that plan as
its key, so `DeterministicBatches` makes exactly those batches whatever the runner, and each batch's
features are the bits `policy_features` computes for it in one process. `PolicyFeatures` is the
batch function `BackendModelHandler` runs (its `load` gives the float32 CPU policy, not a backend).
"""

from __future__ import annotations

from typing import Sequence

from apache_beam.ml.inference.base import PredictionResult

from prefsynth.transforms.model_handler import BackendModelHandler, BatchProgress
from prefsynth.transforms.upo.pair_classifier import rows_features
from prefsynth.transforms.upo.scoring import load_policy


def feature_rows(enc: Sequence[Sequence[int]], n_comp: Sequence[int], plan: Sequence[Sequence[int]]) -> list[dict]:
    """One element per text: its key (rank in the plan), index, token ids and completion length."""
    order = [i for rows in plan for i in rows]
    return [{"key": f"{rank:09d}", "index": i, "enc": list(enc[i]), "n_comp": n_comp[i]}
            for rank, i in enumerate(order)]


class LoadedPolicy:
    """The causal LM and its tokenizer (RunInference shares its model by weak reference: not a tuple)."""

    def __init__(self, lm, tok):
        self.lm, self.tok = lm, tok


class PolicyFeatures(BatchProgress):
    """Batch function: a batch of feature rows -> PredictionResult(index, feature vector) each."""

    unit = "texts"

    def __init__(self, policy_cfg, policy: str, hidden: bool, threads: int, stage: str, total: int | None = None):
        self.policy_cfg, self.policy, self.hidden, self.threads = policy_cfg, policy, hidden, threads
        self.stage, self.total = stage, total

    def load(self) -> LoadedPolicy:
        return LoadedPolicy(*load_policy(self.policy, self.threads))

    def __call__(self, batch: Sequence[dict], model: LoadedPolicy) -> list[PredictionResult]:
        feats = rows_features(model.lm, model.tok, [b["enc"] for b in batch], [b["n_comp"] for b in batch], self.hidden)
        self.progress().add(len(batch))
        return [PredictionResult(b["index"], feats[j]) for j, b in enumerate(batch)]

    def handler(self) -> BackendModelHandler:
        return BackendModelHandler(self.policy_cfg, self.policy, self, self.stage)
