"""One RunInference ModelHandler for every model-using stage: a shared backend and a batch function.

Beam's ml/inference keeps one handler with composable pieces; here too. A model stage is a
picklable callable `infer(batch, model) -> list[PredictionResult]` (generate's `GenerateBatch`,
mcts's `SearchBatch`, label's `MCLabelBatch` and `JudgeBatch`, critiques' `CritiqueBatch`) and
`BackendModelHandler` does the rest:

- the backend comes from `factory.shared_backend`: one engine per worker process for a (backend,
  model, settings), shared by every handler and DoFn of the process that asks for it (the label
  stage's MC rollouts and judges load the policy once), and freed when the stage ends
  (`run_stage` calls `factory.release_backends`);
- `infer.prepare(backend)`, where the function has one, wraps the backend once per worker (the
  judges read their templates beside it); `infer.load()`, where it has one, loads its model
  instead of a backend (the pairs stage's policy features read a causal LM's logits and states);
- batching is left to `DeterministicBatches` (the same batches whatever the runner), so
  RunInference's own BatchElements is skipped;
- metrics go under `prefsynth.<stage>.inference`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Sequence

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from prefsynth.config import PolicyConfig

log = logging.getLogger("prefsynth")
NAMESPACE = "prefsynth"

BatchFunction = Callable[[Sequence[Any], Any], Iterable[PredictionResult]]


class BackendModelHandler(ModelHandler[Any, PredictionResult, Any]):
    """RunInference handler: batches in, `infer(batch, model)` out, the model a shared backend."""

    def __init__(self, policy: PolicyConfig, model: str, infer: BatchFunction, stage: str):
        super().__init__()
        self.policy, self.model, self.infer, self.stage = policy, model, infer, stage

    def should_skip_batching(self) -> bool:
        return True  # DeterministicBatches already made the batches

    def load_backend(self):
        """The process's backend for this policy and model (built on first use)."""
        from prefsynth.backends.factory import shared_backend

        log.info("[%s] %s backend for %s", self.stage, self.policy.backend, self.model)
        return shared_backend(self.policy, self.model)

    def load_model(self):
        load = getattr(self.infer, "load", None)
        backend = load() if callable(load) else self.load_backend()
        prepare = getattr(self.infer, "prepare", None)
        return prepare(backend) if callable(prepare) else backend

    def run_inference(self, batch: Sequence[Any], model, inference_args=None) -> Iterable[PredictionResult]:
        return list(self.infer(batch, model))

    def get_metrics_namespace(self) -> str:
        return f"{NAMESPACE}.{self.stage}.inference"


class BatchProgress:
    """Mixin for a batch function: `self.progress()` is its per-worker progress line (made on the
    first batch, never pickled), with the class's `unit` and the instance's `stage` and `total`."""

    stage, unit, total = "stage", "records", None
    _progress = None

    def __getstate__(self):
        return {**self.__dict__, "_progress": None}

    def progress(self):
        if self._progress is None:
            from prefsynth.pipelines.progress import Progress

            self._progress = Progress(self.stage, total=self.total, unit=self.unit)
        return self._progress


def worker_total(total: int | None, beam_cfg) -> int | None:
    """A progress total a worker can reach: the stage's count when one local worker does all the
    work; none (counts and rate, no ETA) when several workers each see a share of unknown size."""
    local = beam_cfg.runner in ("FnApiRunner", "DirectRunner")
    return total if total and local and beam_cfg.direct_num_workers <= 1 else None
