"""Prompt records: from the arith generator or from user files, with stable ids and splits.

The core functions are plain Python; the DoFns wrap them, route failures to dead letters and
count every input record once.
"""

from __future__ import annotations

import json
import math
import posixpath
import unicodedata
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from prefsynth.config import PromptsConfig
from prefsynth.ids import content_id, unit_hash
from prefsynth.tasks import arith, get_task, gsm8k
from prefsynth.transforms.deadletters import DEAD, count_dropped, count_in, emit_dead

SPLITS = ("train", "validation", "test")  # validation: where every default is chosen; test: read once per run
STAGE = "prompts"
KEPT = "kept."  # counters of records kept though odd (metrics/prompts.json names each)


_KEPT_COUNTERS: dict = {}


def count_kept(note: str, n: int = 1) -> None:
    c = _KEPT_COUNTERS.get(note)
    if c is None:
        c = _KEPT_COUNTERS[note] = beam.metrics.Metrics.counter("prefsynth", KEPT + note)
    c.inc(n)


class PromptError(ValueError):
    """A bad input record; `error_type` and `field` say what is wrong."""

    def __init__(self, error_type: str, message: str, field: str | None = None):
        super().__init__(message)
        self.error_type, self.field = error_type, field


# ---- pure core ---------------------------------------------------------------------------------

def assign_split(prompt_id: str, seed: int, test_fraction: float, validation_fraction: float = 0.0) -> str:
    """The prompt's split by one hash u in [0, 1): test when u < test_fraction (the same test prompts
    whatever validation_fraction is), validation when u < test_fraction + validation_fraction
    (carved from the train side), else train."""
    u = unit_hash(seed, prompt_id, "split")
    if u < test_fraction:
        return "test"
    return "validation" if u < test_fraction + validation_fraction else "train"


def arith_record(problem: arith.ArithProblem, source: str, seed: int, test_fraction: float,
                 validation_fraction: float = 0.0) -> dict:
    question = problem.expression
    prompt_id = content_id(arith.NAME, question)
    return {
        "prompt_id": prompt_id,
        "split": assign_split(prompt_id, seed, test_fraction, validation_fraction),
        "task": arith.NAME,
        "prompt": problem.prompt,
        "messages": [{"role": "user", "content": problem.prompt}],
        "question": question,
        "reference_answer": str(problem.answer),
        "reference_solution": problem.solution,
        "source": source,
        "metadata": json.dumps({"n_ops": len(problem.ops)}),
    }


def check_text(text: str, where: str, name: str, allow_nul: bool = False) -> str:
    """`text` if it can be stored: a lone surrogate (JSON `"\\ud800"`) cannot be encoded as UTF-8
    (Arrow, Parquet and hashing would fail on it) and a NUL is no part of a prompt; PromptError
    `invalid_text` naming the field otherwise."""
    if text.isascii():  # O(1) in CPython: ASCII text has no surrogates, only a NUL is left to look for
        if allow_nul or "\x00" not in text:
            return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise PromptError("invalid_text", f"{where}: field '{name}' has a lone surrogate "
                          f"(\\u{ord(text[err.start]):04x} at character {err.start}), not encodable as UTF-8",
                          name) from None
    if not allow_nul and "\x00" in text:
        raise PromptError("invalid_text", f"{where}: field '{name}' contains a NUL character "
                          f"(at character {text.index(chr(0))})", name)
    return text


def _check_utf8(value, where: str, name: str) -> None:
    if isinstance(value, InvalidUtf8):
        raise PromptError("invalid_utf8", f"{where}: field '{name}' is not valid UTF-8 text", name)


def has_visible_text(text: str) -> bool:
    """Anything but whitespace, control and format characters (zero-width spaces, BOMs)?"""
    if text and "!" <= text[0] <= "~":  # a printable ASCII first character (the usual case) is visible
        return True
    return any(unicodedata.category(c)[0] not in "CZ" for c in text)


def _text_field(obj: dict, name: str, where: str, required: bool, bad_value: str = "wrong_type") -> str | None:
    if name not in obj or obj[name] is None:
        if required:
            raise PromptError("missing_field", f"{where}: field '{name}' is missing", name)
        return None
    value = obj[name]
    if type(value) is str:  # the usual case first: a plain str is neither InvalidUtf8 nor a number
        return check_text(value, where, name)
    _check_utf8(value, where, name)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PromptError("wrong_type", f"{where}: field '{name}' must be a string, got {type(value).__name__}", name)
    if isinstance(value, float) and not math.isfinite(value):  # JSON NaN/Infinity, a float NaN in Parquet
        raise PromptError(bad_value, f"{where}: field '{name}' is {value!r}, not a value", name)
    return check_text(value, where, name) if isinstance(value, str) else str(value)


def _metadata_value(value, where: str, key: str, notes: list | None):
    """A metadata value as JSON can hold it: NaN/Infinity become null (counted in `notes`), UTF-8
    bytes become text; un-encodable text and non-UTF-8 bytes are PromptErrors naming the field."""
    if isinstance(value, float) and not math.isfinite(value):
        if notes is not None:
            notes.append("metadata_non_finite_as_null")
        return None
    if isinstance(value, str):
        return check_text(value, where, f"metadata.{key}", allow_nul=True)
    _check_utf8(value, where, key)
    if isinstance(value, (bytes, bytearray)):
        try:
            return check_text(bytes(value).decode("utf-8"), where, f"metadata.{key}", allow_nul=True)
        except UnicodeDecodeError:
            raise PromptError("wrong_type", f"{where}: field '{key}' (metadata) holds {len(value)} bytes of "
                              "binary data that are not UTF-8 text", key) from None
    if isinstance(value, dict):
        return {check_text(str(k), where, f"metadata.{key}", allow_nul=True): _metadata_value(v, where, key, notes)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_metadata_value(v, where, key, notes) for v in value]
    return value


def metadata_json(extra: dict, where: str, notes: list | None = None) -> str | None:
    """The fields a record has beside the configured ones, as one JSON object (strict JSON: no NaN)."""
    if not extra:
        return None
    clean = {check_text(str(k), where, "metadata", allow_nul=True): _metadata_value(v, where, str(k), notes)
             for k, v in extra.items()}
    text = json.dumps(clean, sort_keys=True, ensure_ascii=False, default=str, allow_nan=False)
    return check_text(text, where, "metadata", allow_nul=True)  # what `default=str` made of odd objects


def _used_fields(cfg: PromptsConfig) -> frozenset:
    """The configured input fields (the others go to metadata); one set per configuration."""
    key = (cfg.question_field, cfg.answer_field, cfg.id_field, cfg.split_field)
    used = _USED_FIELDS.get(key)
    if used is None:
        used = _USED_FIELDS[key] = frozenset(key)
    return used


_USED_FIELDS: dict = {}


def file_record(obj, where: str, cfg: PromptsConfig, seed: int, notes: list | None = None,
                renderer=None) -> dict:
    """One prompt record from a parsed input object; raises PromptError naming the field.
    `notes` (if given) collects what was kept though odd (e.g. `without_reference`), to be counted.
    `renderer` (a prompting.PromptRenderer, if given) renders `prompt` and `messages` as the stage
    stores them; without one they are the task's plain prompt and the bare question as one user turn."""
    if not isinstance(obj, dict):
        raise PromptError("not_an_object", f"{where}: expected a JSON object, got {type(obj).__name__}")
    qfield = cfg.question_field
    question = obj.get(qfield)
    if type(question) is not str:  # the usual case (a plain str) skips these checks
        if question is None:
            raise PromptError("missing_field", f"{where}: field '{qfield}' is missing", qfield)
        _check_utf8(question, where, qfield)
        if not isinstance(question, str):
            raise PromptError("wrong_type", f"{where}: field '{qfield}' must be a string, "
                              f"got {type(question).__name__}", qfield)
    question = check_text(question, where, qfield).strip()
    if not question:
        raise PromptError("empty_text", f"{where}: field '{qfield}' is empty", qfield)
    if not has_visible_text(question):
        raise PromptError("empty_text", f"{where}: field '{qfield}' has only whitespace, control "
                          "or format characters", qfield)
    if len(question) > cfg.max_prompt_chars:
        raise PromptError("too_long", f"{where}: field '{qfield}' has {len(question)} chars "
                          f"> max_prompt_chars={cfg.max_prompt_chars}", qfield)
    task = get_task(cfg.task)
    answer = solution = None
    raw_answer = _text_field(obj, cfg.answer_field, where, required=False, bad_value="bad_answer") \
        if cfg.answer_field else None
    if raw_answer is not None:
        # the task parses its references (`#### n`, `A: n`, `\boxed{}`): a reference it cannot read
        # is a dead letter, never a whole worked solution stored as the answer
        try:
            answer, solution = task.parse_reference(raw_answer)
        except ValueError as err:
            raise PromptError("bad_answer", f"{where}: field '{cfg.answer_field}': {err}", cfg.answer_field)
    elif task.needs_reference:
        what = f"field '{cfg.answer_field}' is missing" if cfg.answer_field else "prompts.answer_field is null"
        raise PromptError("missing_reference", f"{where}: {what}, and task {cfg.task!r} needs a reference answer "
                          "(use task: chat for prompts judged without one)", cfg.answer_field)
    elif notes is not None:
        notes.append("without_reference")  # kept: the task judges prompts without a reference
    if cfg.id_field:
        prompt_id = _text_field(obj, cfg.id_field, where, required=True).strip()
        if not prompt_id:
            raise PromptError("empty_text", f"{where}: field '{cfg.id_field}' is empty", cfg.id_field)
    else:
        prompt_id = content_id(cfg.task, question)
    split = None
    if cfg.split_field:
        split = _text_field(obj, cfg.split_field, where, required=False)
        if split is not None and split not in SPLITS:
            raise PromptError("bad_split", f"{where}: field '{cfg.split_field}' is {split!r}, not one of {SPLITS}",
                              cfg.split_field)
        if split is None and notes is not None:
            notes.append("split_by_hash")  # kept: this record has no split field, its split is by hash
    used = _used_fields(cfg)
    # fields beside the configured ones (usually none: a set comparison, no dict built)
    metadata = None if obj.keys() <= used else \
        metadata_json({k: v for k, v in obj.items() if k not in used}, where, notes)
    if renderer is not None:
        prompt, messages = renderer.render(task, question)
    else:
        prompt, messages = task.format_prompt(question), [{"role": "user", "content": question}]
    return {
        "prompt_id": prompt_id,
        "split": split or assign_split(prompt_id, seed, cfg.test_fraction, cfg.validation_fraction),
        "task": cfg.task,
        "prompt": prompt,
        "messages": messages,
        "question": question,
        "reference_answer": answer,
        "reference_solution": solution,
        "source": where,
        "metadata": metadata,
    }


def parse_json_line(raw: bytes, where: str):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PromptError("invalid_utf8", f"{where}: not valid UTF-8 ({err.reason} at byte {err.start})")
    text = text.removeprefix("\ufeff")  # a byte-order mark (files saved on Windows) is no part of the JSON
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise PromptError("invalid_json", f"{where}: invalid JSON ({err.msg} at column {err.colno})")
    except ValueError as err:  # an integer of more digits than Python converts
        raise PromptError("invalid_json", f"{where}: invalid JSON ({err})")
    except RecursionError:
        raise PromptError("invalid_json", f"{where}: invalid JSON (nested too deeply)") from None


# ---- Beam shell --------------------------------------------------------------------------------

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
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                count_in()
                count_dropped("blank_line")
                continue
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


class InvalidUtf8(bytes):
    """The bytes of a Parquet string value that is not valid UTF-8 (Arrow does not check it when
    reading): file_record makes such a field an `invalid_utf8` dead letter naming the row."""


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
    path, start, end, lineno = byte_range
    name = posixpath.basename(path)
    with FileSystems.open(path) as f:
        f.seek(start)
        data = f.read(end - start)
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()  # the piece after the last newline is not a line
    chunk = []
    for lineno, raw in enumerate(lines, start=lineno):
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            count_in()
            count_dropped("blank_line")
            continue
        chunk.append(RawRecord(f"{name}:{lineno}", (name, lineno), raw))
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def read_jsonl_chunks(path: str):
    """Lists of up to CHUNK RawRecords of a JSONL file (blank lines counted as dropped)."""
    return _chunks(read_jsonl_lines(path))


def read_parquet_chunks(path: str):
    return _chunks(read_parquet_rows(path))


class ParsePrompt(beam.DoFn):
    """A list of RawRecords (or one) -> one list of prompt records, and a dead letter per bad
    record naming the record and field."""

    def __init__(self, cfg: PromptsConfig, seed: int, prompting=None, tokenizer_path: str | None = None):
        from prefsynth.prompting import PromptingConfig

        self.cfg, self.seed = cfg, seed
        self.prompting, self.tokenizer_path = prompting or PromptingConfig(), tokenizer_path
        self.renderer = None

    def setup(self):
        from prefsynth.prompting import PromptRenderer, load_tokenizer

        self.renderer = PromptRenderer(self.prompting, load_tokenizer(self.tokenizer_path))

    def process(self, element):
        records = element if isinstance(element, list) else [element]
        count_in(len(records))
        ok = []
        for rec in records:
            out, dead = self._parse(rec)
            if dead is not None:
                yield dead
            else:
                ok.append(out)
        if ok:
            yield ok

    def _parse(self, rec: RawRecord):
        """(prompt record, None) for a good record, (None, dead letter) for a bad one."""
        if self.renderer is None:
            self.setup()
        notes: list[str] = []
        try:
            if isinstance(rec.payload, arith.ArithProblem):
                out = arith_record(rec.payload, rec.where, self.seed, self.cfg.test_fraction,
                                   self.cfg.validation_fraction)
            else:
                obj = parse_json_line(rec.payload, rec.where) if isinstance(rec.payload, bytes) else rec.payload
                out = file_record(obj, rec.where, self.cfg, self.seed, notes, self.renderer)
        except PromptError as err:
            raw = rec.payload.decode("utf-8", "backslashreplace") if isinstance(rec.payload, bytes) else rec.payload
            return None, emit_dead(STAGE, rec.where, err.error_type, str(err), raw_input=raw)
        except Exception as err:  # a bug, not bad input: fail the stage, naming the record
            raise RuntimeError(f"[{STAGE}] record {rec.where}: {type(err).__name__}: {err}") from err
        for note in set(notes):  # kept though odd: counted per record (before de-duplication)
            count_kept(note)
        if isinstance(rec.payload, arith.ArithProblem):  # file records were rendered by file_record
            out["prompt"], out["messages"] = self.renderer.render(get_task(out["task"]), out["question"])
        # the input position travels with the record (dropped before writing): it decides
        # which copy of a duplicated id is kept (KeepFirstById)
        out[POS_SOURCE], out[POS_INDEX] = rec.position
        return out, None


POS_SOURCE, POS_INDEX = "__pos_source", "__pos_index"
POSITION_FIELDS = ((POS_SOURCE, pa.string()), (POS_INDEX, pa.int64()))


class KeepFirstById:
    """De-duplication inside the shard writer (WriteDataset's `finalize`): keep the first record
    (by input position) of each prompt_id.

    Shards are a function of prompt_id, so all copies of an id meet in one shard: one shuffle does
    both the de-duplication and the sharding. Later copies go to dead letters (`duplicate_id`) when
    they come from user files, and are counted as dropped (`duplicate_problem`) when the generator
    happened to repeat a problem.
    """

    def __init__(self, duplicates_are_errors: bool):
        self.duplicates_are_errors = duplicates_are_errors

    def __call__(self, table: pa.Table):
        table = table.sort_by([("prompt_id", "ascending"), (POS_SOURCE, "ascending"), (POS_INDEX, "ascending")])
        ids = table.column("prompt_id")
        if len(ids) < 2:
            return table, []
        repeated = pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_pylist()
        if not any(repeated):
            return table, []
        keep = [True] + [not r for r in repeated]
        rows = table.select([c for c in table.column_names if not c.startswith("__")])
        outputs, first = [], None
        for i, kept in enumerate(keep):
            if kept:
                first = i
                continue
            if self.duplicates_are_errors:
                dup, kept_rec = rows.slice(i, 1).to_pylist()[0], rows.slice(first, 1).to_pylist()[0]
                outputs.append(emit_dead(STAGE, dup["source"], "duplicate_id",
                                         f"{dup['source']}: prompt_id {dup['prompt_id']!r} already used by "
                                         f"{kept_rec['source']}", raw_input=dup))
            else:
                count_dropped("duplicate_problem")
        return table.filter(pa.array(keep)), outputs


class SelectPrompts(beam.PTransform):
    """Prompts of one split (or all), limited to the first `max_prompts` by id: a subset that is
    the same whatever the runner."""

    def __init__(self, split: str, max_prompts: int | None):
        super().__init__()
        if split not in (*SPLITS, "all"):
            raise ValueError(f"params.yaml: split must be one of {', '.join(SPLITS)} or all, got {split!r}")
        self.split, self.max_prompts = split, max_prompts

    def expand(self, prompts):
        if self.split != "all":
            prompts = prompts | "OfSplit" >> beam.Filter(lambda r, s: r["split"] == s, self.split)
        if self.max_prompts:
            first_ids = (
                prompts
                | "Ids" >> beam.Map(lambda r: r["prompt_id"])
                | "FirstIds" >> beam.combiners.Top.Smallest(self.max_prompts)
                | "AsSet" >> beam.Map(set)
            )
            prompts = prompts | "KeepFirst" >> beam.Filter(lambda r, ids: r["prompt_id"] in ids,
                                                           beam.pvalue.AsSingleton(first_ids))
        return prompts


def selected_count(prompts_path: str, split: str, max_prompts: int | None) -> int | None:
    """How many prompts `SelectPrompts(split, max_prompts)` keeps (for a progress total); None when
    the prompts cannot be read here (e.g. a remote path the driver cannot list)."""
    from prefsynth.schemas.io import read_table

    try:
        splits = read_table(prompts_path, columns=["split"]).column("split").to_pylist()
    except Exception:  # noqa: BLE001 - a progress total is a nicety, never a failure
        return None
    n = len(splits) if split == "all" else sum(s == split for s in splits)
    return min(n, max_prompts) if max_prompts else n
