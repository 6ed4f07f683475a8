"""Reading the run into the plots' rows: accuracy per round, reliability diagrams, the pair precision
funnel and the accounting of every stage, from metrics/ and plots/; what is missing is named.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from prefsynth.report.plots import FUNNEL_STEPS

ACCURACY_METRICS = ("greedy_accuracy", "maj_at_", "pass_at_", "sample_accuracy", "per_step_accuracy")
STAGE_ORDER = ["prompts", "bootstrap", "critic", "generate", "mcts", "label", "critiques", "candidates",
               "pairs", "train", "evaluate", "card"]


ROUND_FILES = {"generate": "generate", "mcts": "mcts", "labels": "label", "critiques": "critiques",
               "candidates": "candidates", "pairs": "pairs", "train": "train", "evaluate": "evaluate"}


def load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def rounds(metrics_dir: Path, plots_dir: Path) -> list[int]:
    found = set()
    for base in (metrics_dir, plots_dir):
        for d in base.glob("round-*"):
            m = re.fullmatch(r"round-(\d+)", d.name)
            if m and d.is_dir():
                found.add(int(m.group(1)))
    return sorted(found)


def _policy_round(name: str, fallback: int) -> int:
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else fallback


def accuracy_rows(metrics_dir: Path, plots_dir: Path, missing: list[str]) -> list[dict]:
    """One row per (split, policy, metric): the latest measurement of each policy."""
    by_key: dict[tuple, dict] = {}
    for r in rounds(metrics_dir, plots_dir):
        ev = load_json(metrics_dir / f"round-{r}" / "evaluate.json")
        if ev is None:
            csv_path = plots_dir / f"round-{r}" / "accuracy.csv"
            if csv_path.exists():  # the plot file of the evaluate stage: no intervals
                with open(csv_path, newline="") as f:
                    for i, row in enumerate(csv.DictReader(f)):
                        for k, v in row.items():
                            if k.startswith(ACCURACY_METRICS) and v not in ("", None):
                                pol = row.get("policy") or f"policy-{i}"
                                by_key[("test", pol, k)] = {"split": "test", "round": _policy_round(pol, i),
                                                           "policy": pol, "metric": k, "value": float(v),
                                                           "lo": "", "hi": "", "n": ""}
                missing.append(f"metrics/round-{r}/evaluate.json (accuracy of round {r} read from {csv_path}, "
                               "without intervals)")
            else:
                missing.append(f"metrics/round-{r}/evaluate.json")
            continue
        sections = [(ev.get("split") or "test", ev.get("policies") or {})]
        val = ev.get("validation") or {}
        if val.get("policies"):
            sections.append((val.get("split") or "validation", val["policies"]))
        for split, policies in sections:
            for i, (pol, res) in enumerate(policies.items()):
                ci = res.get("ci95") or {}
                for k, v in res.items():
                    if k.startswith(ACCURACY_METRICS) and isinstance(v, (int, float)) and not isinstance(v, bool):
                        lo, hi = (ci.get(k) or ["", ""])[:2]
                        by_key[(split, pol, k)] = {"split": split, "round": _policy_round(pol, i), "policy": pol,
                                                   "metric": k, "value": round(float(v), 4), "lo": lo, "hi": hi,
                                                   "n": res.get("n_prompts", "")}
    return sorted(by_key.values(), key=lambda r: (r["split"] != "test", r["split"], r["round"], r["metric"]))


def reliability_rows(plots_dir: Path, metrics_dir: Path, missing: list[str]) -> list[dict]:
    rows = []
    for r in rounds(metrics_dir, plots_dir):
        files = sorted((plots_dir / f"round-{r}" / "reliability").glob("*.csv"))
        if not files:
            missing.append(f"plots/round-{r}/reliability/*.csv")
            continue
        for f in files:
            with open(f, newline="") as fh:
                bins = [b for b in csv.DictReader(fh) if b.get("confidence") not in ("", None)]
            if not bins:
                continue
            for s in (0.0, 1.0):
                rows.append({"round": r, "diagram": f.stem, "series": "perfect calibration", "confidence": s,
                             "accuracy": s, "count": ""})
            for b in bins:
                rows.append({"round": r, "diagram": f.stem, "series": "observed",
                             "confidence": round(float(b["confidence"]), 4),
                             "accuracy": round(float(b["accuracy"]), 4), "count": b.get("count", "")})
    return rows


def funnel_rows(metrics_dir: Path, plots_dir: Path, missing: list[str]) -> list[dict]:
    rows = []
    for r in rounds(metrics_dir, plots_dir):
        pairs = load_json(metrics_dir / f"round-{r}" / "pairs.json")
        precision = (pairs or {}).get("precision")
        if not precision:
            cand = (load_json(metrics_dir / f"round-{r}" / "candidates.json") or {}).get("precision") or {}
            missing.append(f"metrics/round-{r}/pairs.json" + (" (only the candidates, from candidates.json)"
                                                              if cand else ""))
            precision = {src: {"candidates": v} for src, v in cand.items()}
        for source, steps in sorted(precision.items()):
            for i, (key, label) in enumerate(FUNNEL_STEPS):
                s = steps.get(key)
                if not isinstance(s, dict):
                    continue
                p = s.get("precision")
                rows.append({"round": r, "source": source, "step": i, "filter": label, "pairs": s.get("pairs", 0),
                             "precision": "" if p is None else p})
    return rows


def _stage_label(stage: str, r: int | None) -> str:
    return stage if r is None else f"{stage}@{r}"


def accounting_rows(metrics_dir: Path, plots_dir: Path, missing: list[str]) -> tuple[list[dict], list[dict]]:
    """(plot rows, one table row per stage)."""
    found = []  # (sort key, label, accounting)
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    for f in sorted(metrics_dir.glob("*.json")):
        acc = (load_json(f) or {}).get("accounting")
        if acc:
            found.append(((0 if acc.get("stage") in ("prompts", "bootstrap", "critic") else 2,
                           0, order.get(acc.get("stage"), 99)), _stage_label(acc.get("stage", f.stem), None), acc))
    for r in rounds(metrics_dir, plots_dir):
        for f in sorted((metrics_dir / f"round-{r}").glob("*.json")):
            acc = (load_json(f) or {}).get("accounting")
            if acc:
                stage = acc.get("stage") or ROUND_FILES.get(f.stem, f.stem)
                found.append(((1, r, order.get(stage, 99)), _stage_label(stage, r), acc))
    if not found:
        missing.append("metrics/*.json and metrics/round-N/*.json with an `accounting` section")
    found.sort(key=lambda t: t[0])
    rows, table = [], []
    for i, (_, label, acc) in enumerate(found):
        for j, (outcome, key) in enumerate((("out", "n_out"), ("dropped", "n_dropped"), ("dead", "n_dead"))):
            rows.append({"order": i, "stage": label, "outcome": outcome, "outcome_order": j,
                         "records": int(acc.get(key) or 0), "wall_s": acc.get("wall_s", "")})
        table.append({"stage": label, "in": acc.get("n_in"), "out": acc.get("n_out"), "dropped": acc.get("n_dropped"),
                      "dead": acc.get("n_dead"), "balanced": acc.get("balanced"), "wall_s": acc.get("wall_s"),
                      "why dropped": ", ".join(f"{k}: {v}" for k, v in sorted((acc.get("dropped") or {}).items())),
                      "why dead": ", ".join(f"{k}: {v}" for k, v in sorted((acc.get("dead") or {}).items()))})
    return rows, table
