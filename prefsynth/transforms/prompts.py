"""Prompt records: from the arith generator or from user files, with stable ids and splits.

The core functions are plain Python; the DoFns wrap them, route failures to dead letters and
count every input record once:

    prompt_records.py  the pure core: a record from a problem or an input object, its id and split
    prompt_files.py    reading JSONL (whole or by byte ranges) and Parquet into chunks of RawRecords
    prompts.py         the Beam shell: ParsePrompt, KeepFirstById (de-duplication), SelectPrompts
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from prefsynth.config import PromptsConfig
from prefsynth.tasks import arith, get_task
from prefsynth.transforms.deadletters import count_dropped, count_in, emit_dead
from prefsynth.transforms.prompt_files import RawRecord
from prefsynth.transforms.prompt_records import SPLITS, PromptError, arith_record, file_record, parse_json_line

STAGE = "prompts"
# the train-only stream of extra arith problems (prompts.extra_train_prompts): its positions sort after the
# main stream's, so a copy keeps the first
EXTRA_STREAM = "arith-extra"
# the held-out-only stream (prompts.extra_heldout_prompts) sorts after both: a copy of any train problem
# keeps the train one, so no problem is both trained on and held out
HELDOUT_STREAM = "arith-heldout"
STREAM_SPLITS = {EXTRA_STREAM: "train", HELDOUT_STREAM: "heldout"}  # what arith_record's `split` is per stream
KEPT = "kept."  # counters of records kept though odd (metrics/prompts.json names each)
_KEPT_COUNTERS: dict = {}


def count_kept(note: str, n: int = 1) -> None:
    c = _KEPT_COUNTERS.get(note)
    if c is None:
        c = _KEPT_COUNTERS[note] = beam.metrics.Metrics.counter("prefsynth", KEPT + note)
    c.inc(n)


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
                                   self.cfg.validation_fraction,
                                   split=STREAM_SPLITS.get(rec.position[0]))
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
    """Prompts of one split (or all), limited to `max_prompts` by id, skipping the first `offset`
    (a round's own block of fresh prompts): a subset that is the same whatever the runner."""

    def __init__(self, split: str, max_prompts: int | None, offset: int = 0):
        super().__init__()
        if split not in (*SPLITS, "all"):
            raise ValueError(f"params.yaml: split must be one of {', '.join(SPLITS)} or all, got {split!r}")
        if offset and not max_prompts:
            raise ValueError("params.yaml: a block of prompts past the first (offset) needs max_prompts")
        self.split, self.max_prompts, self.offset = split, max_prompts, offset

    def expand(self, prompts):
        if self.split != "all":
            prompts = prompts | "OfSplit" >> beam.Filter(lambda r, s: r["split"] == s, self.split)
        if self.max_prompts:
            block_ids = (
                prompts
                | "Ids" >> beam.Map(lambda r: r["prompt_id"])
                | "FirstIds" >> beam.combiners.Top.Smallest(self.offset + self.max_prompts)
                | "Block" >> beam.Map(lambda ids, start: set(ids[start:]), self.offset)  # Smallest is sorted
            )
            prompts = prompts | "KeepBlock" >> beam.Filter(lambda r, ids: r["prompt_id"] in ids,
                                                           beam.pvalue.AsSingleton(block_ids))
        return prompts


def round_block_offset(stage: str, split: str, max_prompts: int | None, fresh_per_round: bool,
                       iteration: int, available: int | None) -> int:
    """Where round `iteration`'s prompts start in the split's id order: 0, or with
    `fresh_prompts_per_round` the (iteration-1)-th block of `max_prompts`, so each round samples
    prompts no earlier round saw. A split too small for the round's whole block is an error naming
    the numbers (a short last round would be a different experiment)."""
    if not fresh_per_round:
        return 0
    if not max_prompts:
        raise ValueError(f"params.yaml: {stage}.fresh_prompts_per_round needs {stage}.max_prompts "
                         "(the size of each round's block)")
    offset = max(iteration - 1, 0) * max_prompts
    if available is not None and available < offset + max_prompts:
        raise ValueError(
            f"params.yaml: {stage}.fresh_prompts_per_round: round {max(iteration, 1)} needs {split} prompts "
            f"{offset + 1}-{offset + max_prompts} by id, but the split has {available}; raise "
            f"prompts.extra_train_prompts or lower {stage}.max_prompts")
    return offset


def selected_count(available: int | None, max_prompts: int | None, offset: int = 0) -> int | None:
    """How many of `available` prompts `SelectPrompts(split, max_prompts, offset)` keeps (for a
    progress total); None when the split's size is unknown here."""
    if available is None:
        return None
    n = max(available - offset, 0)
    return min(n, max_prompts) if max_prompts else n


def select_round_prompts(stage: str, prompts_path: str, split: str, max_prompts: int | None,
                         fresh_per_round: bool, iteration: int) -> tuple[SelectPrompts, int | None]:
    """The prompts a stage reads in round `iteration`: the SelectPrompts transform and how many it
    keeps (None when the prompts cannot be read here). Reads the split column once."""
    available = split_size(prompts_path, split)
    offset = round_block_offset(stage, split, max_prompts, fresh_per_round, iteration, available)
    return SelectPrompts(split, max_prompts, offset), selected_count(available, max_prompts, offset)


def split_size(prompts_path: str, split: str) -> int | None:
    """Prompts in one split (or all); None when the prompts cannot be read here."""
    from prefsynth.schemas.io import read_table

    try:
        splits = read_table(prompts_path, columns=["split"]).column("split").to_pylist()
    except Exception:  # noqa: BLE001 - a progress total is a nicety, never a failure
        return None
    return len(splits) if split == "all" else sum(s == split for s in splits)
