"""generate stage: N samples per prompt from the policy -> data/responses.

Each response carries its steps (split by the prompt's task), final answer, token count,
sum/mean log-prob, finish reason and self-certainty. Prompts that do not fit the context and
requests that fail after retries go to data/deadletter/generate with the raw output.
"""

from __future__ import annotations

import collections

import apache_beam as beam

from prefsynth.backends.base import SamplingParams
from prefsynth.backends.factory import resolve_model
from prefsynth.config import Params, load_params
from prefsynth.pipelines.cli_args import add_outputs, stage_parser
from prefsynth.pipelines.stage import Output, run_stage, write_metrics
from prefsynth.schemas.io import ReadDataset, WriteDataset, count_distinct, read_table
from prefsynth.transforms.deadletters import DEAD
from prefsynth.transforms.checkpoints import BatchCheckpoints
from prefsynth.transforms.generate import GenerateBatch, GenerateResponses
from prefsynth.transforms.model_handler import worker_total
from prefsynth.transforms.prompts import select_round_prompts

STAGE = "generate"


def sampling_params(params: Params) -> SamplingParams:
    g = params.generate
    return SamplingParams(n=g.n, temperature=g.temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens,
                          stop=tuple(g.stop))


def build(pipeline: beam.Pipeline, params: Params, prompts_path: str, model: str, policy_name: str,
          iteration: int, out: dict[str, str], resume_dir: str | None = None) -> None:
    g = params.generate
    select, selected = select_round_prompts(STAGE, prompts_path, g.split, g.max_prompts,
                                            g.fresh_prompts_per_round, iteration)
    prompts = pipeline | "ReadPrompts" >> ReadDataset(prompts_path) | "Select" >> select
    total = worker_total(selected, params.beam)
    batches = GenerateBatch(params.policy, model, sampling_params(params), params.seed, g.truncate_long_prompts,
                            STAGE, resume_dir, total=total)
    generated = prompts | "Generate" >> GenerateResponses(batches, policy_name, iteration, params.policy.backend)
    generated.responses | "WriteResponses" >> WriteDataset(out["responses"], "responses", STAGE, g.num_shards)
    generated[DEAD] | "WriteDead" >> WriteDataset(out["dead"], "dead_letters", STAGE, 1)


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("generate", __doc__)
    ap.add_argument("--prompts", default="data/prompts")
    ap.add_argument("--policy", default="models/policy-0", help="the policy directory of this round")
    ap.add_argument("--iteration", type=int, default=0)
    add_outputs(ap, out="data/responses", dead="data/deadletter/generate", metrics="metrics/generate.json", reports=True)
    args = ap.parse_args(argv)
    params = load_params(args.params)
    model = resolve_model(args.policy, params.policy)
    policy_name = args.policy.rstrip("/").rsplit("/", 1)[-1]
    # finished batches are kept here until the output is committed: a re-run after a crash
    # (kill -9, preemption) recomputes only the batches that had not finished
    checkpoints = BatchCheckpoints(args.out.rstrip("/") + ".resume" if params.generate.resume else None)
    account = run_stage(
        STAGE, params.beam,
        {"responses": Output(args.out, "responses"), "dead": Output(args.dead, "dead_letters")},
        "responses", "dead",
        lambda p, out: build(p, params, args.prompts, model, policy_name, args.iteration, out,
                             checkpoints.directory),
        count_out=lambda staged: count_distinct(staged["responses"], "prompt_id"),
        refs={"prompt_id": read_table(args.prompts).column("prompt_id").to_pylist()},
        reports_dir=args.reports,
    )
    checkpoints.clear()
    table = read_table(args.out)
    n_tokens = sum(table.column("n_tokens").to_pylist())
    finish = collections.Counter(table.column("finish_reason").to_pylist())
    write_metrics(args.metrics, {
        "accounting": account.to_dict(),
        "responses": table.num_rows,
        "tokens": n_tokens,
        "tokens_per_s": round(n_tokens / account.wall_s, 1) if account.wall_s else None,
        "finish_reasons": dict(sorted(finish.items())),
        "truncated_prompts": sum(bool(x) for x in table.column("truncated_prompt").to_pylist()),
        "batches": {"computed": account.counters.get("computed_batches", 0),
                    "resumed": account.counters.get("resumed_batches", 0)},
    })
