"""One pyarrow schema per dataset: the contract between stages.

Bump SCHEMA_VERSION when a schema changes in a way readers must know about; the version,
the dataset name and the producer are written into every Parquet file's metadata.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1.0"

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

PROMPTS = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),  # train | test
        pa.field("task", pa.string(), nullable=False),  # arith | gsm8k | math | chat
        pa.field("prompt", pa.string(), nullable=False),  # text exactly as the policy sees it
        pa.field("messages", pa.list_(MESSAGE)),  # conversational form, when there is one
        pa.field("question", pa.string()),  # the bare question, without the task's prompt template
        pa.field("reference_answer", pa.string()),
        pa.field("reference_solution", pa.string()),  # worked solution, one step per line
        pa.field("source", pa.string(), nullable=False),  # generator or file:line it came from
        pa.field("metadata", pa.string()),  # JSON object
    ]
)

RESPONSES = pa.schema(
    [
        pa.field("response_id", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("policy", pa.string(), nullable=False),
        pa.field("iteration", pa.int32(), nullable=False),
        pa.field("sample_index", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("steps", pa.list_(pa.string()), nullable=False),
        pa.field("final_answer", pa.string()),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("sum_logprob", pa.float64()),
        pa.field("mean_logprob", pa.float64()),
        pa.field("self_certainty", pa.float64()),
        pa.field("finish_reason", pa.string(), nullable=False),  # stop | length | error
        pa.field("truncated_prompt", pa.bool_()),
        pa.field("source", pa.string(), nullable=False),  # backend that produced it
    ]
)

TREE_NODES = pa.schema(
    [
        pa.field("node_id", pa.string(), nullable=False),
        pa.field("tree_id", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("parent_id", pa.string()),
        pa.field("depth", pa.int32(), nullable=False),
        pa.field("step_text", pa.string(), nullable=False),
        pa.field("prior", pa.float64()),
        pa.field("visits", pa.int32(), nullable=False),
        pa.field("q", pa.float64()),
        pa.field("value", pa.float64()),
        pa.field("reward", pa.float64()),
        pa.field("terminal", pa.bool_(), nullable=False),
        pa.field("final_answer", pa.string()),
        pa.field("verified_correct", pa.bool_()),  # null when no ground truth exists
    ]
)

LABELS = pa.schema(
    [
        pa.field("label_id", pa.string(), nullable=False),
        pa.field("target_id", pa.string(), nullable=False),
        pa.field("target_kind", pa.string(), nullable=False),  # response | step | pair
        pa.field("step_index", pa.int32()),  # for target_kind = step
        pa.field("labeler", pa.string(), nullable=False),
        pa.field("score", pa.float64()),
        pa.field("label", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("rationale", pa.string()),
        pa.field("raw_output", pa.string()),
        pa.field("other_id", pa.string()),  # target_kind = pair: response B (target_id is response A)
    ]
)

PAIRS = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("level", pa.string(), nullable=False),  # response | step | critique
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("chosen", pa.string(), nullable=False),
        pa.field("rejected", pa.string(), nullable=False),
        pa.field("chosen_id", pa.string()),
        pa.field("rejected_id", pa.string()),
        pa.field("chosen_score", pa.float64()),
        pa.field("rejected_score", pa.float64()),
        pa.field("margin", pa.float64()),
        pa.field("uncertainty_mean", pa.float64()),
        pa.field("uncertainty_var", pa.float64()),
        pa.field("uncertainty_bald", pa.float64()),
        pa.field("weight", pa.float64()),
        pa.field("label_source", pa.string()),
        pa.field("kept_reason", pa.string()),
    ]
)

# TRL's unpaired preference format (KTO): one completion with a desirable/undesirable label.
KTO = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("completion", pa.string(), nullable=False),
        pa.field("label", pa.bool_(), nullable=False),
        pa.field("source_id", pa.string()),  # the response it came from
        pa.field("label_source", pa.string()),
    ]
)

# TRL's stepwise supervision format (PRM): the steps of a solution and a label per step.
PRM = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("completions", pa.list_(pa.string()), nullable=False),
        pa.field("labels", pa.list_(pa.bool_()), nullable=False),
        pa.field("source_id", pa.string()),
        pa.field("label_source", pa.string()),
    ]
)

# Step-level critiques (AutoMathCritique style): one row per (response, critic).
CRITIQUES = pa.schema(
    [
        pa.field("critique_id", pa.string(), nullable=False),
        pa.field("response_id", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("critic", pa.string(), nullable=False),  # rule | model | confidence
        pa.field("critic_model", pa.string()),  # the model behind a model or confidence critic
        pa.field("problem", pa.string(), nullable=False),
        pa.field("steps", pa.list_(pa.string()), nullable=False),  # the critiqued response's steps
        pa.field("critic_prompt", pa.string(), nullable=False),  # the critic's input (templates/critique.txt)
        pa.field("critique", pa.string(), nullable=False),  # ends in `Verdict: step N` | `Verdict: correct`
        pa.field("predicted_first_wrong_step", pa.int32()),  # 0-based; null = the critic says correct
        pa.field("true_first_wrong_step", pa.int32()),  # 0-based; null = correct (or unknown: truth_known)
        pa.field("truth_known", pa.bool_(), nullable=False),
        pa.field("located_correctly", pa.bool_()),  # null when no ground truth exists
        pa.field("raw_output", pa.string()),  # a model critic's raw text
    ]
)

# TRL's conversational preference format: the prompt as messages (a step pair's shared prefix is a final
# assistant message that chosen/rejected continue), chosen and rejected as assistant messages.
PAIRS_CONVERSATIONAL = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("level", pa.string(), nullable=False),
        pa.field("prompt", pa.list_(MESSAGE), nullable=False),
        pa.field("chosen", pa.list_(MESSAGE), nullable=False),
        pa.field("rejected", pa.list_(MESSAGE), nullable=False),
        pa.field("weight", pa.float64()),
        pa.field("label_source", pa.string()),
    ]
)

DEAD_LETTERS = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("raw_input", pa.string()),
        pa.field("raw_output", pa.string()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "prompts": PROMPTS,
    "responses": RESPONSES,
    "tree_nodes": TREE_NODES,
    "labels": LABELS,
    "pairs": PAIRS,
    "pairs_conversational": PAIRS_CONVERSATIONAL,
    "kto": KTO,
    "prm": PRM,
    "critiques": CRITIQUES,
    "dead_letters": DEAD_LETTERS,
}

# The column each dataset is sorted and sharded by (its primary key).
KEYS: dict[str, tuple[str, ...]] = {
    "prompts": ("prompt_id",),
    "responses": ("response_id",),
    "tree_nodes": ("node_id",),
    "labels": ("label_id",),
    "pairs": ("pair_id",),
    "pairs_conversational": ("pair_id",),
    "kto": ("example_id",),
    "prm": ("example_id",),
    "critiques": ("critique_id",),
    "dead_letters": ("stage", "record_id", "error_type", "message"),
}


def schema_for(dataset: str) -> pa.Schema:
    try:
        return SCHEMAS[dataset]
    except KeyError:
        raise KeyError(f"unknown dataset {dataset!r}; known: {sorted(SCHEMAS)}") from None
