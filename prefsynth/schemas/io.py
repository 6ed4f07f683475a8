"""Sharded, deterministic Parquet IO for Beam pipelines, and plain readers for the driver.

Records are assigned to shards by a hash of their key and sorted by key inside each shard,
so the same records give the same files byte for byte whatever the runner, the worker count
or the bundle boundaries. Paths go through Beam's FileSystems, so gs:// and s3:// work.
"""

from __future__ import annotations

import hashlib
import io
from typing import Iterable

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from prefsynth import __version__
from prefsynth.schemas.datasets import KEYS, SCHEMA_VERSION, schema_for

METRICS_NAMESPACE = "prefsynth"


def shard_name(index: int, num_shards: int) -> str:
    return f"part-{index:05d}-of-{num_shards:05d}.parquet"


def record_key(dataset: str, record: dict) -> tuple:
    return tuple("" if record.get(k) is None else str(record[k]) for k in KEYS[dataset])


def shard_of(key: tuple, num_shards: int) -> int:
    digest = hashlib.sha256("\x00".join(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") % num_shards


def schema_with_metadata(dataset: str, stage: str) -> pa.Schema:
    return schema_for(dataset).with_metadata(
        {
            "prefsynth.dataset": dataset,
            "prefsynth.schema_version": SCHEMA_VERSION,
            "prefsynth.producer": f"prefsynth {__version__}",
            "prefsynth.stage": stage,
        }
    )


def records_to_table(records: Iterable[dict], dataset: str, stage: str) -> pa.Table:
    """Build a table with the dataset's schema; a record that does not fit raises naming its key."""
    schema = schema_with_metadata(dataset, stage)
    records = list(records)
    try:
        return pa.Table.from_pylist(records, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as err:
        # Find the first offending record to give a useful message.
        for rec in records:
            try:
                pa.Table.from_pylist([rec], schema=schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as rec_err:
                raise ValueError(
                    f"{dataset} record {record_key(dataset, rec)} does not match the schema: {rec_err}"
                ) from err
        raise


def table_to_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    # Fixed writer options: the bytes depend only on the table.
    pq.write_table(table, sink, compression="zstd", use_dictionary=True, write_statistics=True)
    return sink.getvalue()


def write_table(table: pa.Table, path: str) -> None:
    with FileSystems.create(path) as f:
        f.write(table_to_bytes(table))


class _WriteShard(beam.DoFn):
    def __init__(self, path: str, dataset: str, stage: str, num_shards: int):
        self.path, self.dataset, self.stage, self.num_shards = path, dataset, stage, num_shards
        self.rows = beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"rows_written.{dataset}")

    def process(self, element):
        shard, records = element
        target = FileSystems.join(self.path, shard_name(shard, self.num_shards))
        records = sorted((r for r in records if r is not None), key=lambda r: record_key(self.dataset, r))
        try:
            table = records_to_table(records, self.dataset, self.stage)
        except ValueError as err:  # names the record; add the stage and shard
            raise ValueError(f"[{self.stage}] shard {target}: {err}") from err
        write_table(table, target)
        self.rows.inc(table.num_rows)
        yield target, table.num_rows


class WriteDataset(beam.PTransform):
    """Write dict records as `num_shards` Parquet files under `path`, sharded and sorted by key.

    Every shard file is written, empty or not, so the set of files is fixed by the params.
    """

    def __init__(self, path: str, dataset: str, stage: str, num_shards: int = 1):
        super().__init__()
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self.path, self.dataset, self.stage, self.num_shards = path, dataset, stage, num_shards

    def expand(self, records):
        n, dataset = self.num_shards, self.dataset
        keyed = records | "KeyByShard" >> beam.Map(lambda r: (shard_of(record_key(dataset, r), n), r))
        every_shard = (
            records.pipeline
            | "AllShards" >> beam.Create(list(range(n)))
            | "EmptyShard" >> beam.Map(lambda s: (s, None))
        )
        return (
            (keyed, every_shard)
            | "Flatten" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShard(self.path, dataset, self.stage, n))
        )


class ReadDataset(beam.PTransform):
    """Read every Parquet file of a dataset folder as dict records."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, pbegin):
        pattern = self.path.rstrip("/") + "/*.parquet"
        return pbegin | "ReadParquet" >> beam.io.ReadFromParquet(pattern)


def dataset_files(path: str) -> list[str]:
    pattern = path.rstrip("/") + "/*.parquet"
    matches = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in matches)


def read_table(path: str) -> pa.Table:
    """The whole dataset as one table, files in name order (driver-side: metrics, tests, cards)."""
    files = dataset_files(path)
    if not files:
        raise FileNotFoundError(f"no Parquet files under {path}")
    tables = []
    for f in files:
        with FileSystems.open(f) as fh:
            tables.append(pq.read_table(fh))
    return pa.concat_tables(tables)


def read_records(path: str) -> list[dict]:
    return read_table(path).to_pylist()


def count_rows(path: str) -> int:
    total = 0
    for f in dataset_files(path):
        with FileSystems.open(f) as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total


def count_distinct(path: str, column: str) -> int:
    if not dataset_files(path):
        return 0
    return len(set(read_table(path).column(column).to_pylist()))


def file_metadata(path: str) -> dict[str, str]:
    """The prefsynth.* key-value metadata of a Parquet file."""
    with FileSystems.open(path) as fh:
        meta = pq.ParquetFile(fh).schema_arrow.metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"prefsynth.")}
