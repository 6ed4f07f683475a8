"""Resume inside a stage: each finished model batch is saved, so a re-run after a crash only
recomputes the batches that had not finished.

Batches are fixed by the params (DeterministicBatches), so a batch is named by a hash of its
record ids; a re-run finds the same names. Files are written under a temporary name and renamed
when complete, so a kill mid-write leaves no half file that would be trusted. Paths go through
Beam's FileSystems (local, gs://, s3://). The stage deletes the folder once its output is committed.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

from apache_beam.io.filesystems import FileSystems

from prefsynth.backends.base import Completion
from prefsynth.backends.openai_backend import GenerationFailure
from prefsynth.ids import content_id


def _encode(result: Any) -> dict:
    if isinstance(result, GenerationFailure):
        return {"failure": dataclasses.asdict(result)}
    return {"completions": [dataclasses.asdict(c) for c in result]}


def _decode(obj: dict) -> Any:
    if "failure" in obj:
        return GenerationFailure(**obj["failure"])
    return [Completion(**c) for c in obj["completions"]]


class BatchCheckpoints:
    def __init__(self, directory: str | None):
        self.directory = directory

    def key(self, ids: Sequence[str]) -> str:
        return content_id("batch", *sorted(ids), length=24)

    def _path(self, key: str) -> str:
        return FileSystems.join(self.directory, f"batch-{key}.json")

    def load(self, key: str) -> tuple[list[Any], list[bool]] | None:
        if not self.directory:
            return None
        path = self._path(key)
        if not FileSystems.exists(path):
            return None
        with FileSystems.open(path) as f:
            data = json.loads(f.read().decode("utf-8"))
        return [_decode(r) for r in data["results"]], data["truncated"]

    def save(self, key: str, results: Sequence[Any], truncated: Sequence[bool]) -> None:
        if not self.directory:
            return
        payload = json.dumps({"results": [_encode(r) for r in results], "truncated": list(truncated)})
        tmp = self._path(key) + ".tmp"
        with FileSystems.create(tmp) as f:
            f.write(payload.encode("utf-8"))
        FileSystems.rename([tmp], [self._path(key)])

    def clear(self) -> None:
        if self.directory and FileSystems.exists(self.directory):
            FileSystems.delete([self.directory])
