"""Great Expectations suites, one per dataset: what every written dataset must satisfy.

`refs` carries the ids other datasets hold, for foreign keys (every response's prompt exists,
every pair's prompt exists). A few checks need a derived column (chosen differs from
rejected, a step list is non-empty); `validation_frame` adds those before validation.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

SPLITS = ["train", "validation", "test"]
TASKS = ["arith", "gsm8k", "math", "chat"]
FINISH = ["stop", "length"]
TARGET_KINDS = ["response", "step", "pair"]
LEVELS = ["response", "step", "critique"]


def validation_frame(dataset: str, table: pa.Table) -> pd.DataFrame:
    list_cols = [f.name for f in table.schema if pa.types.is_list(f.type)]
    df = table.drop_columns(list_cols).to_pandas() if list_cols else table.to_pandas()
    if dataset == "responses":
        steps = table.column("steps").to_pylist()
        texts = table.column("text").to_pylist()
        # a response with text must have steps; an empty completion may have none
        df["steps_present"] = [bool(s) or not (t or "").strip() for s, t in zip(steps, texts)]
    if dataset == "prompts":
        df["prompt_chars"] = df["prompt"].str.len()
    if dataset == "pairs":
        df["chosen_differs"] = df["chosen"] != df["rejected"]
    if dataset == "prm":
        comps, labs = table.column("completions").to_pylist(), table.column("labels").to_pylist()
        df["steps_match_labels"] = [bool(c) and len(c) == len(l) for c, l in zip(comps, labs)]
    if dataset == "critiques":
        from prefsynth.transforms.critiques import CritiqueParseError, parse_verdict

        def reads_back(text, steps, predicted):
            # the verdict line of every critique parses to the stored located step
            try:
                got = parse_verdict(text, len(steps))
            except CritiqueParseError:
                return False
            return got == (None if pd.isna(predicted) else int(predicted))

        steps = table.column("steps").to_pylist()
        df["verdict_reads_back"] = [reads_back(t, s, p) for t, s, p in
                                    zip(df["critique"], steps, df["predicted_first_wrong_step"])]
        df["located_consistent"] = [
            pd.isna(loc) if not known else bool(loc) == ((None if pd.isna(p) else int(p)) ==
                                                         (None if pd.isna(t) else int(t)))
            for loc, known, p, t in zip(df["located_correctly"], df["truth_known"],
                                        df["predicted_first_wrong_step"], df["true_first_wrong_step"])]
    if dataset == "tree_nodes":
        ids = set(df["node_id"])
        df["parent_resolves"] = [pd.isna(p) or p in ids for p in df["parent_id"]]
    return df


def expectations(dataset: str, refs: dict[str, list] | None = None) -> list:
    import great_expectations as gx

    E = gx.expectations
    refs = refs or {}

    def key(col):
        return [E.ExpectColumnValuesToNotBeNull(column=col), E.ExpectColumnValuesToBeUnique(column=col)]

    def required(*cols):
        return [E.ExpectColumnValuesToNotBeNull(column=c) for c in cols]

    def prob(col):
        return E.ExpectColumnValuesToBeBetween(column=col, min_value=0.0, max_value=1.0)

    def fk(col, ref):
        if ref not in refs:
            return []
        return [E.ExpectColumnValuesToBeInSet(column=col, value_set=sorted(set(refs[ref])))]

    if dataset == "prompts":
        return [*key("prompt_id"), *required("prompt", "task", "source"),
                E.ExpectColumnValuesToBeInSet(column="split", value_set=SPLITS),
                E.ExpectColumnValuesToBeInSet(column="task", value_set=TASKS),
                E.ExpectColumnValuesToBeBetween(column="prompt_chars", min_value=1),
                E.ExpectColumnValuesToBeJsonParseable(column="metadata")]
    if dataset == "responses":
        return [*key("response_id"), *required("prompt_id", "policy", "text", "source"),
                *fk("prompt_id", "prompt_id"),
                E.ExpectColumnValuesToBeBetween(column="sample_index", min_value=0),
                E.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=0),
                E.ExpectColumnValuesToBeBetween(column="mean_logprob", max_value=0.0),
                E.ExpectColumnValuesToBeBetween(column="sum_logprob", max_value=0.0),
                E.ExpectColumnValuesToBeBetween(column="self_certainty", min_value=0.0),
                E.ExpectColumnValuesToBeInSet(column="finish_reason", value_set=FINISH),
                E.ExpectColumnValuesToBeInSet(column="steps_present", value_set=[True])]
    if dataset == "tree_nodes":
        return [*key("node_id"), *required("tree_id", "prompt_id"), *fk("prompt_id", "prompt_id"),
                E.ExpectColumnValuesToBeInSet(column="parent_resolves", value_set=[True]),
                E.ExpectColumnValuesToBeBetween(column="depth", min_value=0),
                E.ExpectColumnValuesToBeBetween(column="visits", min_value=0),
                prob("prior")]
    if dataset == "labels":
        return [*key("label_id"), *required("target_id", "labeler"),
                E.ExpectColumnValuesToBeInSet(column="target_kind", value_set=TARGET_KINDS),
                prob("confidence")]
    if dataset == "pairs":
        return [*key("pair_id"), *required("prompt", "chosen", "rejected", "weight"),
                *fk("prompt_id", "prompt_id"),
                E.ExpectColumnValuesToBeInSet(column="level", value_set=LEVELS),
                E.ExpectColumnValuesToBeInSet(column="chosen_differs", value_set=[True]),
                E.ExpectColumnValuesToBeBetween(column="weight", min_value=0.0),
                prob("uncertainty_mean"), prob("uncertainty_bald")]
    if dataset == "pairs_conversational":
        return [*key("pair_id"), *required("weight"), *fk("prompt_id", "prompt_id"),
                E.ExpectColumnValuesToBeInSet(column="level", value_set=LEVELS)]
    if dataset == "kto":
        return [*key("example_id"), *required("prompt", "completion", "label"), *fk("prompt_id", "prompt_id")]
    if dataset == "prm":
        return [*key("example_id"), *required("prompt"), *fk("prompt_id", "prompt_id"),
                E.ExpectColumnValuesToBeInSet(column="steps_match_labels", value_set=[True])]
    if dataset == "critiques":
        from prefsynth.transforms.critiques import CRITICS  # the one list of critics

        return [*key("critique_id"), *required("response_id", "critic", "critic_prompt", "critique", "truth_known"),
                *fk("prompt_id", "prompt_id"), *fk("response_id", "response_id"),
                E.ExpectColumnValuesToBeInSet(column="critic", value_set=list(CRITICS)),
                E.ExpectColumnValuesToBeInSet(column="task", value_set=TASKS),
                E.ExpectColumnValuesToBeBetween(column="predicted_first_wrong_step", min_value=0),
                E.ExpectColumnValuesToBeBetween(column="true_first_wrong_step", min_value=0),
                E.ExpectColumnValuesToBeInSet(column="verdict_reads_back", value_set=[True]),
                E.ExpectColumnValuesToBeInSet(column="located_consistent", value_set=[True])]
    if dataset == "dead_letters":
        return required("stage", "record_id", "error_type", "message")
    raise KeyError(f"no expectation suite for dataset {dataset!r}")
