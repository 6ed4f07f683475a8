"""What every Beam stage shares: the metrics namespace and the deterministic batches.

`DeterministicBatches` fixes which records a model call sees together (consecutive ids, in id
order), so model outputs do not depend on how a runner bundles records.
"""

from __future__ import annotations

import apache_beam as beam

NAMESPACE = "prefsynth"  # Beam metrics namespace of every stage's counters


def _index_batches(ids: list[str], per_batch: int) -> dict[str, int]:
    return {pid: i // per_batch for i, pid in enumerate(sorted(ids))}


class DeterministicBatches(beam.PTransform):
    """Records -> lists of `per_batch` records, the same lists whatever the runner or worker count.

    Model outputs are floating point: a prompt's log-probs can change in the last bits with the
    padding of the batch it shares. Fixing each batch's members (consecutive ids) and order makes
    the bytes independent of how Beam bundled the records.
    """

    def __init__(self, per_batch: int, key: str = "prompt_id"):
        super().__init__()
        self.per_batch, self.key = per_batch, key

    def expand(self, records):
        key, per_batch = self.key, self.per_batch
        index = (
            records
            | "Ids" >> beam.Map(lambda r: r[key])
            | "AllIds" >> beam.combiners.ToList()
            | "BatchIndex" >> beam.Map(_index_batches, per_batch)
        )
        return (
            records
            | "KeyByBatch" >> beam.Map(lambda r, idx: (idx[r[key]], r), beam.pvalue.AsSingleton(index))
            | "GroupBatch" >> beam.GroupByKey()
            | "SortBatch" >> beam.MapTuple(lambda _, rs: sorted(rs, key=lambda r: r[key]))
        )
