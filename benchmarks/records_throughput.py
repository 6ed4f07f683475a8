"""Non-model stage throughput: the prompts stage (parse, validate, content-hash ids, split,
de-duplicate, dead letters, sharded sorted Parquet, accounting, GX validation) on N synthetic
JSONL records, at 1 and 2 local workers, against a plain single-process pyarrow implementation
of the same transform run in the same process.

    python benchmarks/records_throughput.py [--records 1000000]

Prints records/s and the time ratio to two plain implementations: a minimal one (fewer output
columns: no prompt template, messages or solution) and one running the stage's own pure core
into the same files without Beam (its bytes are checked equal to the stage's), which isolates
what Beam's shell costs (goal: Beam within 3x).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
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


def plain(path: Path, out: Path, seed: int = 0, test_fraction: float = TEST_FRACTION,
          validation_fraction: float = VALIDATION_FRACTION, shards: int = 2) -> int:
    """The same transform without Beam: one process, Python + pyarrow."""
    rows, dead, seen = [], 0, set()
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                obj = json.loads(raw)
                q = obj["question"].strip()
                ans = obj["answer"].rsplit("####", 1)[1].strip()
            except (ValueError, KeyError, IndexError, AttributeError):
                dead += 1
                continue
            pid = hashlib.sha256(f"gsm8k\x00{q}".encode()).hexdigest()[:16]
            if pid in seen:
                dead += 1
                continue
            seen.add(pid)
            h = int.from_bytes(hashlib.sha256(f"{seed}\x00{pid}\x00split".encode()).digest()[:8], "little") >> 1
            u = h / 2**63
            split = "test" if u < test_fraction else "validation" if u < test_fraction + validation_fraction else "train"
            rows.append({"prompt_id": pid, "split": split,
                         "question": q, "reference_answer": ans, "source": f"in.jsonl:{lineno}"})
    table = pa.Table.from_pylist(rows).sort_by("prompt_id")
    out.mkdir(parents=True, exist_ok=True)
    step = -(-table.num_rows // shards)
    for s in range(shards):
        pq.write_table(table.slice(s * step, step), out / f"part-{s}.parquet", compression="zstd")
    return table.num_rows, dead


def plain_same_core(path: Path, out: Path, seed: int = 0, shards: int = 2) -> tuple[int, int]:
    """The stage's own transform without Beam: the same pure core (parse_json_line, file_record),
    keep-first de-duplication, then the same sharded, sorted, schema'd Parquet files, so its bytes
    must equal the stage's. Beam's overhead is the difference to this."""
    from prefsynth.config import PromptsConfig
    from prefsynth.prompting import PromptingConfig, PromptRenderer
    from prefsynth.schemas.io import records_to_table, shard_name, shard_of, write_table
    from prefsynth.tasks import get_task
    from prefsynth.transforms.prompts import PromptError, file_record, parse_json_line

    cfg = PromptsConfig(source="jsonl", path=str(path), task="gsm8k", num_shards=shards,
                        test_fraction=TEST_FRACTION, validation_fraction=VALIDATION_FRACTION)
    renderer = PromptRenderer(PromptingConfig(), None)  # the stage's default: plain text, no tokenizer
    task = get_task(cfg.task)
    kept, dead = {}, 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path.name}:{lineno}"
            try:
                rec = file_record(parse_json_line(raw.rstrip(b"\r\n"), where), where, cfg, seed)
            except PromptError:
                dead += 1
                continue
            rec["prompt"], rec["messages"] = renderer.render(task, rec["question"])
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-records-"))
    src = work / "in.jsonl"
    make_input(src, args.records)

    t0 = time.perf_counter()
    n_out, n_dead = plain(src, work / "plain")
    base = time.perf_counter() - t0
    rows = [("plain pyarrow, 1 process", base, n_out + n_dead, n_out)]
    t0 = time.perf_counter()
    n_out, n_dead = plain_same_core(src, work / "plain_core")
    core = time.perf_counter() - t0
    rows.append(("plain, stage's own core", core, n_out + n_dead, n_out))
    failed: list[str] = []
    for workers in (1, 2):
        params = work / f"p{workers}.json"
        params.write_text(json.dumps({"seed": 0, "beam": {"direct_num_workers": workers},
                                      "prompts": {"source": "jsonl", "path": str(src), "task": "gsm8k",
                                                  "test_fraction": TEST_FRACTION,
                                                  "validation_fraction": VALIDATION_FRACTION}}))
        out = work / f"beam{workers}"
        t0 = time.perf_counter()
        try:
            prompts.main(["--params", str(params), "--out", str(out / "prompts"), "--dead", str(out / "dead"),
                          "--metrics", str(out / "m.json"), "--reports", str(out / "reports")])
        except Exception as err:  # report it beside the others (e.g. an AccountingError)
            failed.append(f"{workers} worker(s): {type(err).__name__}: {str(err).splitlines()[-1]}")
            continue
        wall = time.perf_counter() - t0
        acc = json.loads((out / "m.json").read_text())["accounting"]
        rows.append((f"prompts stage, {workers} worker{'s' if workers > 1 else ''}", wall, acc["n_in"], acc["n_out"]))
    print(f"\n{args.records} records")
    print(f"{'run':<28}{'seconds':>9}{'records/s':>12}{'time vs plain':>15}{'vs own core':>13}{'rows out':>10}")
    for name, s, count, n in rows:
        print(f"{name:<28}{s:>9.1f}{count / s:>12.0f}{s / base:>14.1f}x{s / core:>12.1f}x{n:>10}")
    for f in failed:
        print(f"FAILED {f}")
    if failed:
        raise SystemExit(1)
    if len({n for *_, n in rows}) != 1:
        raise SystemExit("the runs wrote different numbers of rows")
    core_bytes = [f.read_bytes() for f in sorted((work / "plain_core").glob("*.parquet"))]
    for workers in (1, 2):
        if [f.read_bytes() for f in sorted((work / f"beam{workers}" / "prompts").glob("*.parquet"))] != core_bytes:
            raise SystemExit(f"the stage with {workers} worker(s) did not write the same bytes as the plain core")
    print("the stage's files (1 and 2 workers) are byte-identical to the plain core's")


if __name__ == "__main__":
    main()
