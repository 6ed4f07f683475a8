"""prompts stage: task source -> data/prompts (+ data/deadletter/prompts, metrics/prompts.json).

Sources: the built-in arith generator (default), a JSONL file, or a Parquet file. Every record
gets a stable content-hash id and a train/test split fixed by (seed, id).
"""

from __future__ import annotations

import collections

import apache_beam as beam

from prefsynth.config import Params, load_params
from prefsynth.pipelines.cli_args import add_outputs, stage_parser
from prefsynth.prompting import PromptRenderer, load_tokenizer, resolve_tokenizer_path
from prefsynth.pipelines.stage import Output, run_stage, write_metrics
from prefsynth.schemas.io import WriteDataset, read_table
from prefsynth.tasks import arith
from prefsynth.transforms.deadletters import DEAD
from prefsynth.transforms.prompt_files import RawRecord, check_input_file, jsonl_ranges, read_jsonl_range, read_parquet_chunks
from prefsynth.transforms.prompts import EXTRA_STREAM, HELDOUT_STREAM, KEPT, POSITION_FIELDS, STAGE, KeepFirstById, ParsePrompt

GENERATOR_CHUNK = 1000  # problems per generator work item


def _stream_sizes(cfg) -> dict[str, int]:
    """Problems per generator stream; each draws from its own seeded stream (the main one never moves)."""
    return {"arith": cfg.n_prompts, EXTRA_STREAM: cfg.extra_train_prompts, HELDOUT_STREAM: cfg.extra_heldout_prompts}


STREAM_NAMES = {"arith": "prompts", EXTRA_STREAM: "prompts-extra-train", HELDOUT_STREAM: "prompts-extra-heldout"}


def _generate_chunk(work: tuple[str, int], params: Params) -> list[RawRecord]:
    stream, start = work
    count = min(GENERATOR_CHUNK, _stream_sizes(params.prompts)[stream] - start)
    name = STREAM_NAMES[stream]
    return [RawRecord(f"{stream}:{start + i}", (stream, start + i), problem)
            for i, problem in enumerate(arith.generate_problems(params.arith, params.seed, name, start, count))]


def build(pipeline: beam.Pipeline, params: Params, out: dict[str, str]) -> None:
    cfg = params.prompts
    if cfg.source == "arith":
        raw = (
            pipeline
            | "Chunks" >> beam.Create([(stream, i) for stream, total in _stream_sizes(cfg).items()
                                       for i in range(0, total, GENERATOR_CHUNK)])
            | "Generate" >> beam.Map(_generate_chunk, params)
        )
    elif cfg.source in ("jsonl", "parquet"):
        if not cfg.path:
            raise ValueError(f"params.yaml: prompts.path is required for source={cfg.source}")
        raw = None
    else:
        raise ValueError(f"params.yaml: prompts.source must be arith, jsonl or parquet, got {cfg.source!r}")
    spread = params.beam.direct_num_workers > 1 or params.beam.preset != "local"
    if cfg.source in ("jsonl", "parquet"):
        check_input_file(cfg.path, cfg)  # missing file, wrong kind, missing column: one clear error
    if cfg.source == "jsonl":
        # byte ranges of whole lines: each worker reads its own, no records cross workers before parsing
        ranges = pipeline | "Ranges" >> beam.Create(jsonl_ranges(cfg.path))
        if spread:
            ranges = ranges | "SpreadRanges" >> beam.Reshuffle()
        raw = ranges | "Read" >> beam.FlatMap(read_jsonl_range)
    elif cfg.source == "parquet":
        raw = pipeline | "Files" >> beam.Create([cfg.path]) | "Read" >> beam.FlatMap(read_parquet_chunks)
        if spread:  # one file is read by one worker: spread the chunks of records before parsing
            raw = raw | "Spread" >> beam.Reshuffle()
    elif spread:
        raw = raw | "Spread" >> beam.Reshuffle()
    tokenizer = resolve_tokenizer_path(params.prompting, params.bootstrap.model, params.policy.model)
    parsed = raw | "Parse" >> beam.ParDo(ParsePrompt(cfg, params.seed, params.prompting, tokenizer)).with_outputs(
        DEAD, main="ok")
    # one shuffle shards, de-duplicates (shards are a function of prompt_id) and sorts; records
    # travel in lists (chunks) up to the writer, which makes Arrow batches of them
    written = parsed.ok | "WritePrompts" >> WriteDataset(
        out["prompts"], "prompts", STAGE, cfg.num_shards, extra_fields=POSITION_FIELDS,
        finalize=KeepFirstById(duplicates_are_errors=cfg.source != "arith"))
    (
        (parsed[DEAD], written[DEAD])
        | "AllDead" >> beam.Flatten()
        | "WriteDead" >> WriteDataset(out["dead"], "dead_letters", STAGE, 1)
    )


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("prompts", __doc__)
    add_outputs(ap, out="data/prompts", dead="data/deadletter/prompts", metrics="metrics/prompts.json", reports=True)
    args = ap.parse_args(argv)
    params = load_params(args.params)
    tokenizer = resolve_tokenizer_path(params.prompting, params.bootstrap.model, params.policy.model)
    # fail before the pipeline on a chat format without a chat template
    mode = PromptRenderer(params.prompting, load_tokenizer(tokenizer)).mode if tokenizer or \
        params.prompting.format == "chat" else "plain"
    account = run_stage(
        STAGE, params.beam, {"prompts": Output(args.out, "prompts"), "dead": Output(args.dead, "dead_letters")},
        "prompts", "dead", lambda p, out: build(p, params, out), reports_dir=args.reports,
    )
    table = read_table(args.out, columns=["split", "reference_answer"])
    splits = collections.Counter(table.column("split").to_pylist())
    # records kept though odd, each under its own name: prompts without a reference answer (a
    # task that needs none) as written, the others as counted while parsing (before de-duplication)
    kept = {k[len(KEPT):]: v for k, v in account.counters.items() if k.startswith(KEPT) and v}
    kept["without_reference"] = table.column("reference_answer").null_count
    write_metrics(args.metrics, {"accounting": account.to_dict(), "splits": dict(sorted(splits.items())),
                                 **dict(sorted(kept.items())), "prompt_format": mode, "tokenizer": tokenizer})
