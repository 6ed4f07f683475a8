"""The label stage's metrics: what each labeller is worth against the exact verifiers.

`mc_metrics` scores each MC method's detected first wrong step (and the rollouts it spent);
`quality_metrics` scores every non-verifier labeller's P(correct) against ground truth (accuracy,
ECE, Brier, AUROC), step labels against both "no error so far" and step-local correctness;
`write_reliability` writes the reliability diagrams DVC plots.
"""

from __future__ import annotations

import collections
import csv
from pathlib import Path

from prefsynth import calibration
from prefsynth.tasks import get_task
from prefsynth.transforms.judges import LABELERS as JUDGE_LABELERS
from prefsynth.transforms.mc_labels import detection_scores


def mc_metrics(labels: list[dict], responses: dict[str, dict], prompts: dict[str, dict], methods) -> dict:
    """First-wrong-step detection of each MC method against the task's exact step verifier (where it has one)."""
    by_method: dict[str, dict[str, list[dict]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for row in labels:
        if row["labeler"].startswith("mc_"):
            by_method[row["labeler"][3:]][row["target_id"]].append(row)
    out = {}
    for method in methods:
        pairs, spent = [], []
        for rid, rows in by_method.get(method, {}).items():
            resp = responses[rid]
            prompt = prompts[resp["prompt_id"]]
            task = get_task(prompt["task"])
            if not task.exact_steps:
                continue
            truth = task.verify_steps(prompt, list(resp["steps"])).first_wrong_step
            # the first probed prefix the decision rule (label.mc.bad_*) called bad
            measured = sorted((r for r in rows if r["rationale"] == "rollouts"), key=lambda r: r["step_index"])
            pred = next((r["step_index"] for r in measured if r["label"] == "incorrect"), None)
            pairs.append((pred, truth))
            spent.append(int(rows[0]["raw_output"].split("=")[1]))
        if pairs:
            out[method] = {**detection_scores(pairs), "responses": len(pairs),
                           "rollouts_per_response": round(sum(spent) / len(spent), 2)}
    return out


def ground_truth(labels: list[dict]) -> tuple[dict, dict]:
    """Verifier verdicts: response_id -> correct, and (response_id, step) -> correct."""
    responses, steps = {}, {}
    for r in labels:
        if r["labeler"].startswith("verifier_"):
            if r["target_kind"] == "response":
                responses[r["target_id"]] = r["score"] == 1.0
            elif r["target_kind"] == "step":
                steps[(r["target_id"], r["step_index"])] = r["score"] == 1.0
    return responses, steps


def step_local_truth(labels: list[dict], responses: dict[str, dict], prompts: dict[str, dict]) -> dict:
    """(response_id, step) -> (step-local correct, operation line?) for every step a non-verifier
    labeler labelled, where the task has exact steps (prefsynth/step_local.py)."""
    from prefsynth.step_local import is_operation_line, step_local_correct

    wanted = {r["target_id"] for r in labels
              if r["target_kind"] == "step" and not r["labeler"].startswith("verifier_")}
    out = {}
    for rid in sorted(wanted):
        resp = responses.get(rid)
        prompt = prompts.get(resp["prompt_id"]) if resp else None
        if prompt is None:
            continue
        steps = list(resp["steps"])
        local = step_local_correct(get_task(prompt["task"]), prompt, steps)
        for i, ok in enumerate(local or []):
            out[(rid, i)] = (ok, is_operation_line(steps[i]))
    return out


def quality_metrics(labels: list[dict], self_judge: bool, step_local: dict | None = None,
                    confidence_span: str = "line") -> tuple[dict, list[dict]]:
    """Every non-verifier labeler scored against the verifiers where they give ground truth.

    Returns (the `quality` metrics section, reliability-diagram rows). A labeler's `score` is read
    as its P(correct) (pairs: P(A better), against truth only on pairs where exactly one is right).
    Step labels are scored twice: against "no error so far" (kind `step`, the verifier step label,
    what MC values estimate) and, given `step_local` (`step_local_truth`), against step-local
    correctness (kinds `step_local`, `step_local_op_lines`: what the P(True) question asks). Each
    block names its truth (`truth`) and, for the self-evaluations, the question its score answers
    (step confidence's depends on `confidence_span`, `label.judge.step_confidence_span`).
    """
    from prefsynth.step_local import TRUTHS
    from prefsynth.transforms.judges.p_true import QUESTIONS as P_TRUE_QUESTIONS
    from prefsynth.transforms.judges.step_confidence import QUESTIONS_BY_SPAN

    questions = {JUDGE_LABELERS["p_true"]: P_TRUE_QUESTIONS,
                 JUDGE_LABELERS["step_confidence"]: QUESTIONS_BY_SPAN[confidence_span]}

    step_local = step_local or {}
    truth_r, truth_s = ground_truth(labels)
    groups: dict[tuple[str, str], tuple[list, list, list]] = collections.defaultdict(lambda: ([], [], []))
    pair_rows: dict[str, list[dict]] = collections.defaultdict(list)
    for r in labels:
        if r["labeler"].startswith("verifier_") or r["score"] is None:
            continue
        kind = r["target_kind"]
        if kind == "response":
            truth = truth_r.get(r["target_id"])
        elif kind == "step":
            truth = truth_s.get((r["target_id"], r["step_index"]))
        else:
            pair_rows[r["labeler"]].append(r)
            a, b = truth_r.get(r["target_id"]), truth_r.get(r["other_id"])
            truth = a if a is not None and b is not None and a != b else None
        if truth is None:
            continue
        kinds = [(kind, truth)]
        if kind == "step" and (r["target_id"], r["step_index"]) in step_local:
            local, op_line = step_local[(r["target_id"], r["step_index"])]
            kinds.append(("step_local", local))
            if op_line:
                kinds.append(("step_local_op_lines", local))
        for k, t in kinds:
            probs, truths, confs = groups[(r["labeler"], k)]
            probs.append(min(max(r["score"], 0.0), 1.0))
            truths.append(t)
            confs.append(r["confidence"])
    out: dict[str, dict] = collections.defaultdict(dict)
    plot_rows: list[dict] = []
    for (labeler, kind), (probs, truths, confs) in sorted(groups.items()):
        q = calibration.quality(probs, truths, confs)
        if kind in TRUTHS:
            q["truth"] = TRUTHS[kind]
        if kind.split("_")[0] in questions.get(labeler, {}):
            q["question"] = questions[labeler][kind.split("_")[0]]
        if self_judge and kind == "response" and labeler in set(JUDGE_LABELERS.values()):
            # over-confidence of a self-judge: how much better it scores its own outputs than they are (mean
            # score - true rate). Not self-preference: that needs the judge to score another model's outputs too
            q["self_judge_overconfidence"] = q["mean_score"] - q["true_rate"]
        out[labeler][kind] = q
        plot_rows += calibration.bins_as_rows(labeler, kind, calibration.reliability_bins(probs, truths))
    for labeler, rows in sorted(pair_rows.items()):
        block = out[labeler].setdefault("pair", {"n": 0})
        inconsistent = sum(r["label"] == "position_inconsistent" for r in rows)
        block.update(n_judged=len(rows), n_position_inconsistent=inconsistent,
                     position_inconsistency_rate=inconsistent / len(rows))
    return dict(out), plot_rows


def write_reliability(plots_dir: str, rows: list[dict]) -> None:
    """One CSV per (labeler, target kind): the reliability diagram DVC plots (confidence vs accuracy)."""
    path = Path(plots_dir)
    if path.exists():
        for old in path.glob("*.csv"):
            old.unlink()
    path.mkdir(parents=True, exist_ok=True)
    by: dict[str, list[dict]] = collections.defaultdict(list)
    for r in rows:
        by[f"{r['labeler']}_{r['target_kind']}"].append(r)
    for name, rs in sorted(by.items()):
        with open(path / f"{name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["bin", "lower", "upper", "confidence", "accuracy", "count"])
            w.writeheader()
            for r in rs:
                w.writerow({k: (round(r[k], 6) if isinstance(r[k], float) else r[k]) for k in w.fieldnames})
