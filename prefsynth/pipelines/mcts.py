"""mcts stage: step-level tree search from each prompt with the policy -> data/trees.

One row per node (node_id, tree_id, prompt_id, parent_id, depth, step_text, prior, visits, q,
value, reward, terminal, final_answer, verified_correct). metrics/mcts.json compares the trees
with the policy's single samples, and Q of correct steps with Q of wrong ones.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import apache_beam as beam

from prefsynth.backends.factory import resolve_model
from prefsynth.config import Params, load_params
from prefsynth.pipelines.cli_args import add_outputs, stage_parser
from prefsynth.pipelines.stage import Output, run_stage, write_metrics
from prefsynth.schemas.io import ReadDataset, WriteDataset, count_distinct, read_records, read_table
from prefsynth.tasks import get_task
from prefsynth.transforms.deadletters import DEAD
from prefsynth.transforms.mcts_beam import SearchBatch, SearchTrees
from prefsynth.transforms.model_handler import worker_total
from prefsynth.transforms.prompts import select_round_prompts

STAGE = "mcts"


def build(pipeline: beam.Pipeline, params: Params, prompts_path: str, model: str, tag: str,
          out: dict[str, str], iteration: int = 0) -> None:
    m = params.mcts
    select, selected = select_round_prompts(STAGE, prompts_path, m.split, m.max_prompts,
                                            m.fresh_prompts_per_round, iteration)
    total = worker_total(selected, params.beam)
    searcher = SearchBatch(params.policy, model, m.search, params.seed, tag, total=total)
    searched = (
        pipeline
        | "ReadPrompts" >> ReadDataset(prompts_path)
        | "Select" >> select
        | "Search" >> SearchTrees(searcher, m.trees_per_batch)
    )
    searched.rows | "WriteTrees" >> WriteDataset(out["trees"], "tree_nodes", STAGE, m.num_shards)
    # a tree whose search hit a failed model call is a dead letter (never a childless terminal leaf)
    searched[DEAD] | "WriteDead" >> WriteDataset(out["dead"], "dead_letters", STAGE, 1)


def tree_metrics(nodes: list[dict], prompts: dict[str, dict], responses: list[dict] | None) -> dict:
    """Search quality against ground truth (where the task has it)."""
    trees: dict[str, list[dict]] = {}
    for n in nodes:
        trees.setdefault(n["tree_id"], []).append(n)
    with_correct = sum(any(n["terminal"] and n["verified_correct"] for n in ns) for ns in trees.values())
    steps = [n for n in nodes if n["parent_id"] is not None and n["verified_correct"] is not None]
    q_right = [n["q"] for n in steps if n["verified_correct"] and n["visits"] > 0]
    q_wrong = [n["q"] for n in steps if not n["verified_correct"] and n["visits"] > 0]
    out = {
        "trees": len(trees),
        "nodes": len(nodes),
        "nodes_per_tree": round(len(nodes) / max(len(trees), 1), 2),
        "trees_with_correct_terminal": round(with_correct / max(len(trees), 1), 4),
        "mean_q_correct_steps": round(statistics.fmean(q_right), 4) if q_right else None,
        "mean_q_incorrect_steps": round(statistics.fmean(q_wrong), 4) if q_wrong else None,
        "visited_correct_steps": len(q_right),
        "visited_incorrect_steps": len(q_wrong),
    }
    if responses:
        searched = {n["prompt_id"] for n in nodes}
        same = [r for r in responses if r["prompt_id"] in searched]
        if same:
            ok = [get_task(prompts[r["prompt_id"]]["task"]).answers_match(
                r["final_answer"], prompts[r["prompt_id"]]["reference_answer"]) for r in same]
            out["policy_single_sample_accuracy"] = round(sum(ok) / len(ok), 4)
            out["single_sample_prompts"] = len({r["prompt_id"] for r in same})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("mcts", __doc__)
    ap.add_argument("--prompts", default="data/prompts")
    ap.add_argument("--policy", default="models/policy-0")
    ap.add_argument("--iteration", type=int, default=0)
    ap.add_argument("--responses", default="data/responses",
                    help="the same policy's samples, to compare the search with (optional)")
    add_outputs(ap, out="data/trees", dead="data/deadletter/mcts", metrics="metrics/mcts.json", reports=True)
    args = ap.parse_args(argv)
    params = load_params(args.params)
    model = resolve_model(args.policy, params.policy)
    tag = f"{Path(args.policy).name}/{args.iteration}"
    prompts_table = read_table(args.prompts)
    account = run_stage(
        STAGE, params.beam, {"trees": Output(args.out, "tree_nodes"), "dead": Output(args.dead, "dead_letters")},
        "trees", "dead", lambda p, out: build(p, params, args.prompts, model, tag, out, args.iteration),
        count_out=lambda staged: count_distinct(staged["trees"], "prompt_id"),
        refs={"prompt_id": prompts_table.column("prompt_id").to_pylist()},
        reports_dir=args.reports,
    )
    prompts = {r["prompt_id"]: r for r in prompts_table.to_pylist()}
    responses = read_records(args.responses) if Path(args.responses).exists() else None
    metrics = tree_metrics(read_records(args.out), prompts, responses)
    # cost of the search: batched model calls (one generate + one reward call per iteration and
    # batch of trees) and generated tokens, per node written
    c, n_nodes = account.counters, max(metrics["nodes"], 1)
    metrics["cost"] = {"model_calls": c.get("model_calls", 0),
                       "calls_per_node": round(c.get("model_calls", 0) / n_nodes, 4),
                       "generated_tokens": c.get("generated_tokens", 0),
                       "tokens_per_node": round(c.get("generated_tokens", 0) / n_nodes, 2),
                       "nodes_per_s": round(metrics["nodes"] / account.wall_s, 1) if account.wall_s else None}
    write_metrics(args.metrics, {"accounting": account.to_dict(), **metrics})
