"""Record-stage throughput: the prompts stage (parse, validate, content-hash ids, split, render
prompts, de-duplicate, dead letters, sharded sorted Parquet, accounting, GX validation) on N
synthetic JSONL records, at 1 and 2 local workers, against two plain implementations run in the
same process; then the pure cores of the candidates and pairs stages on synthetic inputs.

    python benchmarks/records_throughput.py [--records 1000000]

Baselines of the prompts stage (time ratios printed):
- "plain pyarrow": an independent single-process Python + pyarrow script (`plain`) that writes the
  same columns into the same files; its bytes are checked against the stage's (and reported). See
  its docstring for what it checks less.
- "own core": the stage's own pure core (`file_record`, the same renderer) without Beam, into the
  same files (`plain_same_core`); its bytes must equal the stage's: what Beam's shell costs.

Fixed costs (imports of Beam and Great Expectations, pipeline construction) are paid once by a
warm-up stage run on 2,000 records before the timed runs, and printed on their own line: the rows
compare the cost of N records. Goal: the stage on 1 worker within 3x of the plain script.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from prefsynth.pipelines import prompts  # noqa: E402


def make_input(path: Path, n: int) -> None:
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(n):
            if i % 1000 == 999:
                f.write("{broken json\n")
                continue
            j = i if i % 500 else i - 1  # some duplicates
            f.write(json.dumps({"question": f"Ann has {j} apples and buys {rng.randint(1, 99)} more. How many?",
                                "answer": f"She has more.\n#### {j}"}) + "\n")


# the splits both the stage and the plain versions assign (prompts.test_fraction / validation_fraction)
TEST_FRACTION, VALIDATION_FRACTION = 0.2, 0.1


_FINAL = re.compile(r"####[ \t]*(.+?)[ \t]*$", re.MULTILINE)
_NUMBER = re.compile(r"-?\$?\s*(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?%?")


def plain(path: Path, out: Path, seed: int = 0, test_fraction: float = TEST_FRACTION,
          validation_fraction: float = VALIDATION_FRACTION, shards: int = 2) -> tuple[int, int]:
    """The same transform written as a plain script: one process, Python + pyarrow, no prefsynth
    code but the published schema (types and file metadata). Columns built directly as Arrow arrays.

    Same work per record: JSON parse, strip, a `#### n` reference and its worked solution, the
    content-hash id, the hash split, the gsm8k plain prompt and its one-turn `messages`, keep-first
    de-duplication, shards by hash of the id, rows sorted by id, zstd Parquet with the same writer
    options. What it does less than the stage: no per-field type checks (non-string fields, lone
    surrogates, NUL, invisible-only text, max_prompt_chars), no metadata column for extra fields
    (this input has none: all null), the reference is checked by one regex (no Fraction parse, no
    `A: n`/boxed/bare-number forms), bad records are counted, not written as dead letters, no
    accounting, no validation. On this input its files are byte-identical to the stage's."""
    from prefsynth.schemas.io import schema_with_metadata, shard_name

    kept: dict[str, tuple] = {}
    dead = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                obj = json.loads(raw)
                q = obj["question"].strip()
                text = obj["answer"].strip()
            except (ValueError, KeyError, AttributeError, TypeError):
                dead += 1
                continue
            m = _FINAL.search(text)
            ans = m.group(1).strip() if m else ""
            if not q or not ans or not _NUMBER.fullmatch(ans):
                dead += 1
                continue
            pid = hashlib.sha256(f"gsm8k\x00{q}".encode()).hexdigest()[:16]
            if pid in kept:
                dead += 1
                continue
            h = int.from_bytes(hashlib.sha256(f"{seed}\x00{pid}\x00split".encode()).digest()[:8], "little") >> 1
            u = h / float(1 << 63)
            split = "test" if u < test_fraction else "validation" if u < test_fraction + validation_fraction \
                else "train"
            solution = _FINAL.sub("", text).rstrip() or None
            kept[pid] = (split, f"Question: {q}\nAnswer: Let's think step by step.\n", q,
                         ans.replace(",", "").replace("$", "").rstrip("."), solution, f"{path.name}:{lineno}")
    schema = schema_with_metadata("prompts", "prompts")
    by_shard: list[list[str]] = [[] for _ in range(shards)]
    for pid in sorted(kept):
        by_shard[int.from_bytes(hashlib.sha256(pid.encode()).digest()[:8], "little") % shards].append(pid)
    out.mkdir(parents=True, exist_ok=True)
    for s, ids in enumerate(by_shard):
        split, prompt, question, answer, solution, source = zip(*(kept[i] for i in ids)) if ids else ([],) * 6
        n = len(ids)
        prompts = pa.array(prompt, pa.string())
        messages = pa.ListArray.from_arrays(
            pa.array(range(n + 1), pa.int32()),
            pa.StructArray.from_arrays([pa.array(["user"] * n, pa.string()), prompts], fields=list(schema.field("messages").type.value_type)))
        table = pa.Table.from_arrays(
            [pa.array(ids, pa.string()), pa.array(split, pa.string()), pa.array(["gsm8k"] * n, pa.string()),
             prompts, messages, pa.array(question, pa.string()), pa.array(answer, pa.string()),
             pa.array(solution, pa.string()), pa.array(source, pa.string()), pa.nulls(n, pa.string())],
            schema=schema)
        pq.write_table(table, out / shard_name(s, shards), compression="zstd", use_dictionary=True,
                       write_statistics=True)
    return len(kept), dead


def plain_same_core(path: Path, out: Path, seed: int = 0, shards: int = 2) -> tuple[int, int]:
    """The stage's own transform without Beam: the same pure core (parse_json_line, file_record),
    keep-first de-duplication, then the same sharded, sorted, schema'd Parquet files, so its bytes
    must equal the stage's. Beam's overhead is the difference to this."""
    from prefsynth.config import PromptsConfig
    from prefsynth.prompting import PromptingConfig, PromptRenderer
    from prefsynth.schemas.io import records_to_table, shard_name, shard_of, write_table
    from prefsynth.transforms.prompt_records import PromptError, file_record, parse_json_line

    cfg = PromptsConfig(source="jsonl", path=str(path), task="gsm8k", num_shards=shards,
                        test_fraction=TEST_FRACTION, validation_fraction=VALIDATION_FRACTION)
    renderer = PromptRenderer(PromptingConfig(), None)  # the stage's default: plain text, no tokenizer
    kept, dead = {}, 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path.name}:{lineno}"
            try:
                rec = file_record(parse_json_line(raw.rstrip(b"\r\n"), where), where, cfg, seed, None, renderer)
            except PromptError:
                dead += 1
                continue
            if rec["prompt_id"] in kept:
                dead += 1
                continue
            kept[rec["prompt_id"]] = rec
    by_shard: list[list[dict]] = [[] for _ in range(shards)]
    for pid in sorted(kept):
        by_shard[shard_of((pid,), shards)].append(kept[pid])
    out.mkdir(parents=True, exist_ok=True)
    for s, recs in enumerate(by_shard):
        write_table(records_to_table(recs, "prompts", "prompts"), str(out / shard_name(s, shards)))
    return len(kept), dead


def run_stage(src: Path, out: Path, workers: int) -> tuple[float, int, int]:
    """The prompts stage as `dvc repro` runs it (prompts.main); (seconds, records in, rows out)."""
    params = out.parent / f"{out.name}.json"
    params.write_text(json.dumps({"seed": 0, "beam": {"direct_num_workers": workers},
                                  "prompts": {"source": "jsonl", "path": str(src), "task": "gsm8k",
                                              "test_fraction": TEST_FRACTION,
                                              "validation_fraction": VALIDATION_FRACTION}}))
    t0 = time.perf_counter()
    prompts.main(["--params", str(params), "--out", str(out / "prompts"), "--dead", str(out / "dead"),
                  "--metrics", str(out / "m.json"), "--reports", str(out / "reports")])
    wall = time.perf_counter() - t0
    acc = json.loads((out / "m.json").read_text())["accounting"]
    return wall, acc["n_in"], acc["n_out"]


def parquet_bytes(folder: Path) -> list[bytes]:
    return [f.read_bytes() for f in sorted(folder.glob("*.parquet"))]


# ---- other record stages: their pure cores on synthetic inputs (no Beam) ------------------------

def candidates_core(n_prompts: int, samples: int = 8) -> tuple[float, int, int]:
    """The candidates stage's per-prompt core (response_candidates over a verifier's scores, kto_rows,
    dedupe) and the Arrow conversion of its rows, on `n_prompts` prompts of `samples` responses with
    0/1 scores; (seconds, responses in, pairs out)."""
    from prefsynth.config import CandidatesConfig
    from prefsynth.pipelines.candidates import response_candidates
    from prefsynth.schemas.io import records_to_table
    from prefsynth.transforms.pairs import dedupe, kto_rows

    rng = random.Random(1)
    cfg = CandidatesConfig(response_sources=["verifier"])
    groups = []
    for i in range(n_prompts):
        prompt = {"prompt_id": f"p{i:08d}", "task": "gsm8k", "prompt": f"Question: Ann has {i} apples. How many?\n"}
        responses = [{"response_id": f"r{i:08d}-{k}", "text": f"She has {i}.\nThe answer is {i + rng.randint(0, 2)}",
                      "mean_logprob": -rng.random()} for k in range(samples)]
        scores = {r["response_id"]: float(rng.random() < 0.5) for r in responses}
        groups.append((prompt, responses, {"verifier_gsm8k": scores}))
    t0 = time.perf_counter()
    rows, kto = [], []
    for prompt, responses, by_source in groups:
        rows += dedupe(response_candidates(prompt, responses, by_source, cfg))
        kto += kto_rows(prompt, responses, by_source["verifier_gsm8k"], "verifier")
    records_to_table(rows, "pairs", "candidates")
    records_to_table(kto, "kto", "candidates")
    return time.perf_counter() - t0, n_prompts * samples, len(rows)


def pairs_core(n_pairs: int, passes: int = 8) -> tuple[float, int, int]:
    """The pairs stage's selection core past the estimator: BALD uncertainty of `passes` MC-dropout
    probabilities per pair (upo.uncertainty), UPO sampling per (level, source) group (upo.select)
    and the cross-source de-duplication (transforms/pair_filters.dedupe); (seconds, pairs in, pairs kept)."""
    import numpy as np

    from prefsynth.transforms.pair_filters import dedupe
    from prefsynth.transforms import upo

    rng = np.random.default_rng(2)
    probs = rng.beta(4, 2, size=(passes, n_pairs))
    pairs = [{"pair_id": f"{i:016x}", "level": "response", "label_source": ("verifier_gsm8k", "self_consistency")[i % 2],
              "prompt": f"Q{i // 4}", "chosen": f"c{i // 2}", "rejected": f"r{i // 2}", "kept_reason": "best vs worst"}
             for i in range(n_pairs)]
    t0 = time.perf_counter()
    mean, var, bald, agree = upo.uncertainty(probs)
    dropped: dict[str, str] = {}
    for source in ("verifier_gsm8k", "self_consistency"):
        idx = [i for i, p in enumerate(pairs) if p["label_source"] == source]
        for i, d in zip(idx, upo.select([pairs[i]["pair_id"] for i in idx], mean[idx], bald[idx], agree[idx],
                                        min_agree=0.5, keep_fraction=0.8, hard_fraction=0.5, seed=0)):
            if not d.kept:
                dropped[pairs[i]["pair_id"]] = d.reason
    dedupe(pairs, dropped, ["verifier"])
    return time.perf_counter() - t0, n_pairs, n_pairs - len(dropped)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--workers", default="1,2", help="stage runs, by worker count (comma-separated)")
    ap.add_argument("--other-stages", type=int, default=None,
                    help="records for the candidates/pairs core rows (default: records / 4; 0: skip)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-records-"))
    src = work / "in.jsonl"
    make_input(src, args.records)
    warm_src = work / "warm.jsonl"
    make_input(warm_src, 2000)
    warm, *_ = run_stage(warm_src, work / "warm", 1)  # imports, Beam and GX set-up: paid once here

    t0 = time.perf_counter()
    n_out, n_dead = plain(src, work / "plain")
    base = time.perf_counter() - t0
    rows = [("plain pyarrow, 1 process", base, n_out + n_dead, n_out)]
    t0 = time.perf_counter()
    n_out, n_dead = plain_same_core(src, work / "plain_core")
    core = time.perf_counter() - t0
    rows.append(("plain, stage's own core", core, n_out + n_dead, n_out))
    failed: list[str] = []
    workers_list = [int(w) for w in args.workers.split(",") if w]
    for workers in workers_list:
        try:
            wall, n_in, n = run_stage(src, work / f"beam{workers}", workers)
        except Exception as err:  # report it beside the others (e.g. an AccountingError)
            failed.append(f"{workers} worker(s): {type(err).__name__}: {str(err).splitlines()[-1]}")
            continue
        rows.append((f"prompts stage, {workers} worker{'s' if workers > 1 else ''}", wall, n_in, n))
    print(f"\nprompts stage: {args.records} records (fixed costs, paid once by a 2,000-record warm-up run "
          f"before the timed rows: {warm:.1f} s)")
    print(f"{'run':<28}{'seconds':>9}{'records/s':>12}{'vs plain':>10}{'vs own core':>13}{'rows out':>10}")
    for name, s, count, n in rows:
        print(f"{name:<28}{s:>9.1f}{count / s:>12.0f}{s / base:>9.1f}x{s / core:>12.1f}x{n:>10}")
    for f in failed:
        print(f"FAILED {f}")
    if failed:
        raise SystemExit(1)
    if len({n for *_, n in rows}) != 1:
        raise SystemExit("the runs wrote different numbers of rows")
    core_bytes = parquet_bytes(work / "plain_core")
    for workers in workers_list:
        if parquet_bytes(work / f"beam{workers}" / "prompts") != core_bytes:
            raise SystemExit(f"the stage with {workers} worker(s) did not write the same bytes as the plain core")
    print(f"byte check: the stage's files ({', '.join(map(str, workers_list))} worker(s)) are byte-identical "
          "to the plain core's")
    same = parquet_bytes(work / "plain") == core_bytes
    print(f"byte check: the plain pyarrow script's files are {'byte-identical to' if same else 'DIFFERENT from'} "
          "the stage's")
    one = next((s for name, s, *_ in rows if name == "prompts stage, 1 worker"), None)
    if one is not None:
        print(f"RATIO prompts stage (1 worker) / plain pyarrow = {one / base:.2f}x "
              f"(goal <= 3.0x: {'met' if one / base <= 3.0 else 'not met'}); "
              f"/ own core = {one / core:.2f}x; own core / plain = {core / base:.2f}x")

    n_other = args.records // 4 if args.other_stages is None else args.other_stages
    if n_other:
        print(f"\nother record stages: pure cores, no Beam, no baseline ({n_other} records each)")
        print(f"{'core':<44}{'seconds':>9}{'records/s':>12}{'rows out':>10}")
        for name, (s, count, n) in (
                ("candidates: candidates + dedupe + kto + Arrow", candidates_core(max(1, n_other // 8))),
                ("pairs: BALD + UPO select + dedupe", pairs_core(n_other))):
            print(f"{name:<44}{s:>9.2f}{count / s:>12.0f}{n:>10}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
