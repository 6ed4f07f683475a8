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
from apache_beam.transforms.window import GlobalWindows

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


def records_to_table(records: Iterable[dict], dataset: str, stage: str, schema: pa.Schema | None = None) -> pa.Table:
    """Build a table with the dataset's schema (or `schema`, a superset of it); a record that does
    not fit raises naming its key."""
    schema = schema or schema_with_metadata(dataset, stage)
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


BATCH_ROWS = 20_000  # records per Arrow batch before the shuffle (bounds a worker's buffer)
KEY_PREFIX = "__key"  # sort-key columns carried through the shuffle, dropped before writing


def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(blob)).read_all()


class _BatchByShard(beam.DoFn):
    """Records -> (shard, Arrow IPC bytes): each record is converted to Arrow once, here, and the
    shuffle moves a few large byte strings per shard instead of a pickled dict per record.

    The record's key (as strings, the order `record_key` defines) travels as `__key<i>` columns so
    the shard writer sorts with Arrow; `extra_fields` are columns a `finalize` step needs (e.g. the
    input position for de-duplication) and are dropped before writing.
    """

    def __init__(self, path: str, dataset: str, stage: str, num_shards: int, extra_fields: tuple = ()):
        self.path, self.dataset, self.stage, self.num_shards = path, dataset, stage, num_shards
        self.extra_fields = tuple(extra_fields)

    def setup(self):
        base = schema_with_metadata(self.dataset, self.stage)
        self.n_keys = len(KEYS[self.dataset])
        self.schema = pa.schema(list(base) + [pa.field(n, t) for n, t in self.extra_fields], metadata=base.metadata)

    def start_bundle(self):
        self.records: dict[int, list] = {}
        self.keys: dict[int, list] = {}

    def process(self, element):
        # a record, or a list of records (stages that move records in chunks: fewer Beam elements)
        for record in element if isinstance(element, list) else (element,):
            key = record_key(self.dataset, record)
            shard = shard_of(key, self.num_shards)
            records = self.records.get(shard)
            if records is None:
                records = self.records[shard] = []
                self.keys[shard] = []
            records.append(record)
            self.keys[shard].append(key)
            if len(records) >= BATCH_ROWS:
                yield shard, self._flush(shard)

    def finish_bundle(self):
        for shard in sorted(self.records):
            if self.records[shard]:
                yield GlobalWindows.windowed_value((shard, self._flush(shard)))

    def _flush(self, shard: int) -> bytes:
        records, keys = self.records[shard], self.keys[shard]
        self.records[shard], self.keys[shard] = [], []
        try:
            table = records_to_table(records, self.dataset, self.stage, self.schema)
        except ValueError as err:  # names the record; add the stage and shard
            target = FileSystems.join(self.path, shard_name(shard, self.num_shards))
            raise ValueError(f"[{self.stage}] shard {target}: {err}") from err
        for i, column in enumerate(zip(*keys) if keys else [()] * self.n_keys):
            table = table.append_column(f"{KEY_PREFIX}{i}", pa.array(column, pa.string()))
        return _to_ipc(table)


class _WriteShard(beam.DoFn):
    """(shard, [IPC batches]) -> one Parquet file, rows sorted by key (optionally `finalize`d first:
    a function of the shard's table returning (table, outputs to emit), e.g. de-duplication)."""

    def __init__(self, path: str, dataset: str, stage: str, num_shards: int, extra_fields: tuple = (),
                 finalize=None):
        self.path, self.dataset, self.stage, self.num_shards = path, dataset, stage, num_shards
        self.extra_fields, self.finalize = tuple(extra_fields), finalize
        self.rows = beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"rows_written.{dataset}")

    def process(self, element):
        shard, blobs = element
        schema = schema_with_metadata(self.dataset, self.stage)
        target = FileSystems.join(self.path, shard_name(shard, self.num_shards))
        tables = [_from_ipc(b) for b in blobs if b is not None]
        if tables:
            table = pa.concat_tables(tables)
            if self.finalize is not None:
                table, outputs = self.finalize(table)
                yield from outputs
            keys = [c for c in table.column_names if c.startswith(KEY_PREFIX)]
            table = table.sort_by([(k, "ascending") for k in keys])
            # the dataset's columns only, one chunk each: the same table as from_pylist of the
            # sorted records, so the same bytes
            table = pa.Table.from_arrays([table.column(f.name).combine_chunks() for f in schema], schema=schema)
        else:
            table = schema.empty_table()
        write_table(table, target)
        self.rows.inc(table.num_rows)
        yield target, table.num_rows


class WriteDataset(beam.PTransform):
    """Write dict records (or lists of them) as `num_shards` Parquet files under `path`, sharded
    and sorted by key.

    Every shard file is written, empty or not, so the set of files is fixed by the params.
    Records become Arrow batches before the shuffle (see _BatchByShard). `extra_fields`
    ((name, pyarrow type) pairs) are record fields kept for `finalize(table) -> (table, outputs)`,
    which sees each shard's whole table before it is sorted and written; its outputs (e.g. dead
    letters as TaggedOutputs) are emitted beside the written files.
    """

    def __init__(self, path: str, dataset: str, stage: str, num_shards: int = 1, extra_fields: tuple = (),
                 finalize=None):
        super().__init__()
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self.path, self.dataset, self.stage, self.num_shards = path, dataset, stage, num_shards
        self.extra_fields, self.finalize = tuple(extra_fields), finalize

    def expand(self, records):
        n = self.num_shards
        batches = records | "BatchByShard" >> beam.ParDo(
            _BatchByShard(self.path, self.dataset, self.stage, n, self.extra_fields))
        every_shard = (
            records.pipeline
            | "AllShards" >> beam.Create(list(range(n)))
            | "EmptyShard" >> beam.Map(lambda s: (s, None))
        )
        write = beam.ParDo(_WriteShard(self.path, self.dataset, self.stage, n, self.extra_fields, self.finalize))
        if self.finalize is not None:  # its tagged outputs are reachable by name on the result
            write = write.with_outputs(main="written")
        return (
            (batches, every_shard)
            | "Flatten" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> write
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


def read_table(path: str, columns: list[str] | None = None) -> pa.Table:
    """The whole dataset (or some `columns`) as one table, files in name order (driver-side:
    metrics, tests, cards)."""
    files = dataset_files(path)
    if not files:
        raise FileNotFoundError(f"no Parquet files under {path}")
    tables = []
    for f in files:
        with FileSystems.open(f) as fh:
            tables.append(pq.read_table(fh, columns=columns))
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
