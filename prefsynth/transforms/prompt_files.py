"""Reading the prompts stage's input files into chunks of RawRecords: JSONL (whole, or by byte
ranges read in parallel) and Parquet, with the checks that name a file that is not what it claims.
"""

from __future__ import annotations

import posixpath
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from prefsynth.config import PromptsConfig
from prefsynth.tasks import get_task
from prefsynth.transforms.deadletters import count_dropped, count_in
from prefsynth.transforms.prompt_records import InvalidUtf8


class RawRecord(NamedTuple):
    """An input record before parsing; `position` orders records for de-duplication.
    (A NamedTuple: a million of them are built and pickled far faster than frozen dataclasses.)"""

    where: str  # file:line, or generator:index
    position: tuple
    payload: object  # bytes (JSONL line), dict (Parquet row) or ArithProblem


CHUNK = 1000  # records per Beam element: Beam's cost is per element, so records travel in chunks


def _chunks(records, size: int = CHUNK):
    chunk = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def read_jsonl_lines(path: str):
    name = posixpath.basename(path)
    with FileSystems.open(path) as f:
        for lineno, raw in enumerate(f, start=1):
            yield from _jsonl_record(name, lineno, raw)


def _jsonl_record(name: str, lineno: int, raw: bytes):
    """The RawRecord of one JSONL line (none for a blank line, which is counted as dropped): one rule
    for the whole-file and the byte-range readers, so both give the same names and line numbers."""
    raw = raw.rstrip(b"\r\n")
    if not raw.strip():
        count_in()
        count_dropped("blank_line")
        return
    yield RawRecord(f"{name}:{lineno}", (name, lineno), raw)


PARQUET_MAGIC = b"PAR1"


def _not_parquet(path: str, err: Exception) -> ValueError:
    return ValueError(f"prompts.path {path}: not a Parquet file ({err}); "
                      "if it holds one JSON object per line, set prompts.source: jsonl")


def check_input_file(path: str, cfg: PromptsConfig) -> None:
    """Driver-side checks of a jsonl/parquet input before the pipeline, each one clear error
    naming the file: it exists, it is of the configured kind, and a Parquet file has the
    configured columns (a missing column would make every record a dead letter)."""
    if not FileSystems.exists(path):
        raise FileNotFoundError(f"prompts.path {path}: no such file (source: {cfg.source})")
    with FileSystems.open(path, compression_type="uncompressed") as f:
        head = f.read(4)
    if cfg.source == "jsonl":
        if head == PARQUET_MAGIC:
            raise ValueError(f"prompts.path {path}: a Parquet file, not JSON lines; set prompts.source: parquet")
        return
    try:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            names = pq.ParquetFile(f).schema_arrow.names
    except (pa.ArrowException, OSError) as err:
        raise _not_parquet(path, err) from None
    task = get_task(cfg.task)
    wanted = [("question_field", cfg.question_field), ("id_field", cfg.id_field), ("split_field", cfg.split_field)]
    if task.needs_reference:
        wanted.append(("answer_field", cfg.answer_field))
    for key, column in wanted:
        if column and column not in names:
            need = f" (task {cfg.task!r} needs a reference answer; task: chat needs none)" \
                if key == "answer_field" else ""
            raise ValueError(f"prompts.path {path}: no column {column!r} (prompts.{key}){need}; "
                             f"its columns: {names}")


def read_parquet_rows(path: str):
    name = posixpath.basename(path)
    with FileSystems.open(path) as f:
        try:
            table = pq.read_table(f)
        except pa.ArrowInvalid as err:
            raise _not_parquet(path, err) from None
    names = table.column_names
    columns = [_column_values(table.column(c)) for c in names]
    for i, values in enumerate(zip(*columns), start=1):
        yield RawRecord(f"{name}:row{i}", (name, i), dict(zip(names, values)))


def _column_values(column: pa.ChunkedArray) -> list:
    """Python values of a Parquet column; a string value that is not UTF-8 becomes InvalidUtf8
    instead of failing the whole file."""
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        pass
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        binary = pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()
        out = []
        for raw in column.combine_chunks().view(binary).to_pylist():
            try:
                out.append(None if raw is None else raw.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(InvalidUtf8(raw))
        return out
    out = []  # a nested column: the rows that cannot be decoded, as one marker each
    for i in range(len(column)):
        try:
            out.append(column.slice(i, 1).to_pylist()[0])
        except UnicodeDecodeError:
            out.append(InvalidUtf8(b""))
    return out


RANGE_BYTES = 8 << 20  # JSONL bytes per read work item


def jsonl_ranges(path: str, block: int = RANGE_BYTES) -> list[tuple[str, int, int, int]]:
    """(path, start byte, end byte, first line number) ranges of whole lines, about `block` bytes
    each: workers read their own ranges, so records are not read by one worker and shipped to the
    others. One pass counting newlines (at IO speed) on the driver."""
    ranges, start, start_line, pos, lines_before = [], 0, 1, 0, 0
    with FileSystems.open(path) as f:
        while data := f.read(block):
            last = data.rfind(b"\n")
            if last >= 0:
                end = pos + last + 1
                ranges.append((path, start, end, start_line))
                start, start_line = end, lines_before + data.count(b"\n", 0, last + 1) + 1
            lines_before += data.count(b"\n")
            pos += len(data)
    if pos > start:
        ranges.append((path, start, pos, start_line))
    return ranges


def read_jsonl_range(byte_range: tuple[str, int, int, int]):
    """Chunks of RawRecords of one range: the same records, names and line numbers as reading
    the whole file line by line (blank lines counted as dropped)."""
    return _chunks(_range_lines(byte_range))


def _range_lines(byte_range: tuple[str, int, int, int]):
    path, start, end, lineno = byte_range
    name = posixpath.basename(path)
    with FileSystems.open(path) as f:
        f.seek(start)
        data = f.read(end - start)
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()  # the piece after the last newline is not a line
    for lineno, raw in enumerate(lines, start=lineno):
        yield from _jsonl_record(name, lineno, raw)


def read_jsonl_chunks(path: str):
    """Lists of up to CHUNK RawRecords of a JSONL file (blank lines counted as dropped)."""
    return _chunks(read_jsonl_lines(path))


def read_parquet_chunks(path: str):
    return _chunks(read_parquet_rows(path))
