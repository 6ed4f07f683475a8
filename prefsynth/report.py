"""report: one HTML page with the run's plots, rendered offline (inline SVG).

Accuracy per round (test and validation, 95% intervals), reliability diagrams of every labeler,
the pair precision funnel per source through each filter, and the accounting of every stage — read
from metrics/*.json, metrics/round-N/*.json (evaluate, labels, candidates, pairs) and
plots/round-N/reliability/*.csv. A missing piece leaves its section saying what is missing.

Every plot is a Vega-Lite spec written as a DVC plot template (reports/plots/templates/<plot>.json)
over a CSV (reports/plots/<plot>.csv); the page renders exactly those templates filled with exactly
those rows (vl-convert, no browser, no network), and `dvc plots show` renders the same templates over
the same files. `dvc plots show --html-template reports/dvc_plots_offline.html` gives DVC's page
with Vega's JavaScript inlined, so it renders with no network too.
"""

from __future__ import annotations

import argparse
import copy
import csv
import html
import json
import logging
import re
import time
from pathlib import Path

log = logging.getLogger("prefsynth")

DATA_ANCHOR = "<DVC_METRIC_DATA>"
SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
FUNNEL_STEPS = [("candidates", "candidates"), ("after_agreement_filter", "agreement filter"),
                ("after_upo_contradiction", "UPO contradiction"), ("after_upo", "UPO"),
                ("final", "final (dedupe + source gate)")]
ACCURACY_METRICS = ("greedy_accuracy", "maj_at_", "pass_at_", "sample_accuracy", "per_step_accuracy")
STAGE_ORDER = ["prompts", "bootstrap", "critic", "generate", "mcts", "label", "critiques", "candidates",
               "pairs", "train", "evaluate", "card"]
ROUND_FILES = {"generate": "generate", "mcts": "mcts", "labels": "label", "critiques": "critiques",
               "candidates": "candidates", "pairs": "pairs", "train": "train", "evaluate": "evaluate"}


def _num(field: str) -> dict:
    return {"calculate": f"toNumber(datum['{field}'])", "as": field}


# ---- the plots: (title, CSV columns, DVC x/y, Vega-Lite template) ---------------------------------

def _accuracy_template() -> dict:
    enc_x = {"field": "round", "type": "ordinal", "title": "round (policy trained)"}
    return {
        "$schema": SCHEMA, "data": {"values": DATA_ANCHOR},
        "transform": [_num("round"), _num("value"), _num("lo"), _num("hi")],
        "facet": {"column": {"field": "split", "type": "nominal", "title": None}},
        "spec": {"width": 300, "height": 220, "layer": [
            {"mark": {"type": "line", "point": True},
             "encoding": {"x": enc_x, "y": {"field": "value", "type": "quantitative", "title": "accuracy",
                                            "scale": {"zero": False}},
                          "color": {"field": "metric", "type": "nominal"},
                          "tooltip": [{"field": "policy"}, {"field": "metric"}, {"field": "value"},
                                      {"field": "lo"}, {"field": "hi"}, {"field": "n"}]}},
            {"mark": {"type": "rule", "opacity": 0.6},
             "encoding": {"x": enc_x, "y": {"field": "lo", "type": "quantitative"}, "y2": {"field": "hi"},
                          "color": {"field": "metric", "type": "nominal"}}},
        ]},
    }


def _reliability_template() -> dict:
    axis = {"type": "quantitative", "scale": {"domain": [0, 1]}}
    return {
        "$schema": SCHEMA, "data": {"values": DATA_ANCHOR},
        "transform": [_num("confidence"), _num("accuracy"), _num("count")],
        "facet": {"field": "diagram", "type": "nominal", "title": None}, "columns": 4,
        "spec": {"width": 180, "height": 180, "layer": [
            {"transform": [{"filter": "datum.series == 'perfect calibration'"}],
             "mark": {"type": "line", "strokeDash": [4, 4], "color": "#999"},
             "encoding": {"x": {"field": "confidence", **axis}, "y": {"field": "accuracy", **axis}}},
            {"transform": [{"filter": "datum.series == 'observed'"}],
             "mark": {"type": "line", "point": True},
             "encoding": {"x": {"field": "confidence", "title": "mean confidence", **axis},
                          "y": {"field": "accuracy", "title": "fraction correct", **axis},
                          "color": {"field": "round", "type": "nominal"},
                          "tooltip": [{"field": "confidence"}, {"field": "accuracy"}, {"field": "count"}]}},
            {"transform": [{"filter": "datum.series == 'observed'"}],
             "mark": {"type": "circle", "opacity": 0.5},
             "encoding": {"x": {"field": "confidence", **axis}, "y": {"field": "accuracy", **axis},
                          "size": {"field": "count", "type": "quantitative", "title": "items in bin"},
                          "color": {"field": "round", "type": "nominal"}}},
        ]},
    }


def _funnel_template() -> dict:
    x = {"field": "filter", "type": "ordinal", "title": None, "sort": [label for _, label in FUNNEL_STEPS],
         "axis": {"labelAngle": -30}}
    color = {"field": "source", "type": "nominal"}
    tooltip = [{"field": "source"}, {"field": "filter"}, {"field": "pairs"}, {"field": "precision"},
               {"field": "round"}]
    return {
        "$schema": SCHEMA, "data": {"values": DATA_ANCHOR},
        "transform": [_num("step"), _num("pairs"), _num("precision")],
        "hconcat": [
            {"width": 320, "height": 240, "mark": {"type": "line", "point": True},
             "encoding": {"x": x, "y": {"field": "precision", "type": "quantitative", "title": "pair precision",
                                        "scale": {"domain": [0, 1]}},
                          "color": color, "strokeDash": {"field": "round", "type": "nominal"}, "tooltip": tooltip}},
            {"width": 320, "height": 240, "mark": {"type": "line", "point": True},
             "encoding": {"x": x, "y": {"field": "pairs", "type": "quantitative", "title": "pairs (held-out prompts)"},
                          "color": color, "strokeDash": {"field": "round", "type": "nominal"}, "tooltip": tooltip}},
        ],
    }


def _accounting_template() -> dict:
    return {
        "$schema": SCHEMA, "data": {"values": DATA_ANCHOR},
        "transform": [_num("records"), _num("order")],
        "width": 520, "height": {"step": 18},
        "mark": "bar",
        "encoding": {
            "y": {"field": "stage", "type": "nominal", "title": None,
                  "sort": {"field": "order", "op": "min", "order": "ascending"}},
            "x": {"field": "records", "type": "quantitative", "stack": "zero", "title": "input records"},
            "color": {"field": "outcome", "type": "nominal",
                      "scale": {"domain": ["out", "dropped", "dead"], "range": ["#4c78a8", "#f58518", "#e45756"]}},
            "order": {"field": "outcome_order", "type": "ordinal"},
            "tooltip": [{"field": "stage"}, {"field": "outcome"}, {"field": "records"}, {"field": "wall_s"}],
        },
    }


PLOTS: dict[str, dict] = {
    "accuracy": {"title": "Held-out accuracy per round", "x": "round", "y": "value",
                 "columns": ["split", "round", "policy", "metric", "value", "lo", "hi", "n"],
                 "template": _accuracy_template},
    "reliability": {"title": "Reliability diagrams (labelers and judges)", "x": "confidence", "y": "accuracy",
                    "columns": ["round", "diagram", "series", "confidence", "accuracy", "count"],
                    "template": _reliability_template},
    "funnel": {"title": "Pair precision per source through each filter (held-out prompts)", "x": "filter",
               "y": "precision", "columns": ["round", "source", "step", "filter", "pairs", "precision"],
               "template": _funnel_template},
    "accounting": {"title": "Accounting per stage: in = out + dropped + dead", "x": "records", "y": "stage",
                   "columns": ["order", "stage", "outcome", "outcome_order", "records", "wall_s"],
                   "template": _accounting_template},
}


def dvc_plot_definitions(plots_dir: str = "reports/plots") -> dict:
    """The `plots:` entries of the report stage in dvc.yaml (tests check dvc.yaml says the same)."""
    return {f"{plots_dir}/{name}.csv": {"cache": False, "template": f"{plots_dir}/templates/{name}.json",
                                        "x": p["x"], "y": p["y"], "title": p["title"]}
            for name, p in PLOTS.items()}


# ---- reading the run ---------------------------------------------------------------------------

def _load(path: Path) -> dict | None:
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
        ev = _load(metrics_dir / f"round-{r}" / "evaluate.json")
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
        pairs = _load(metrics_dir / f"round-{r}" / "pairs.json")
        precision = (pairs or {}).get("precision")
        if not precision:
            cand = (_load(metrics_dir / f"round-{r}" / "candidates.json") or {}).get("precision") or {}
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
        acc = (_load(f) or {}).get("accounting")
        if acc:
            found.append(((0 if acc.get("stage") in ("prompts", "bootstrap", "critic") else 2,
                           0, order.get(acc.get("stage"), 99)), _stage_label(acc.get("stage", f.stem), None), acc))
    for r in rounds(metrics_dir, plots_dir):
        for f in sorted((metrics_dir / f"round-{r}").glob("*.json")):
            acc = (_load(f) or {}).get("accounting")
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


# ---- writing -----------------------------------------------------------------------------------

def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    """Rows as DVC reads a CSV plot (every value a string; the templates convert)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fill(template: dict, rows: list[dict]) -> dict:
    """The template with its data anchor replaced by the rows (what DVC does, with its `rev` field)."""
    spec = copy.deepcopy(template)
    spec["data"] = {"values": [{**r, "rev": "workspace"} for r in rows]}
    return spec


def render_svg(spec: dict) -> str:
    import vl_convert

    return vl_convert.vegalite_to_svg(spec)


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if r.get(c) is None else str(r.get(c)))}</td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
section {{ margin-bottom: 2.5em; }} figure.plot {{ margin: 0; overflow-x: auto; }}
.missing {{ background: #fff4e5; border-left: 4px solid #f58518; padding: .5em 1em; }}
table {{ border-collapse: collapse; font-size: 13px; margin-top: .8em; }}
td, th {{ border: 1px solid #ddd; padding: 2px 8px; text-align: right; }} th {{ background: #f4f4f4; }}
code {{ background: #f4f4f4; padding: 0 3px; }}
</style></head><body>
<h1>{title}</h1>
<p>{intro}</p>
{sections}
<script>
// measured by the browser after layout: tests read these back from the rendered DOM
window.addEventListener("load", function () {{
  document.querySelectorAll("figure.plot").forEach(function (fig) {{
    var svg = fig.querySelector("svg"), box = svg ? svg.getBoundingClientRect() : null;
    var marks = svg ? svg.querySelectorAll("path, rect, line, circle, text").length : 0;
    fig.setAttribute("data-rendered", box && box.width > 0 && box.height > 0 && marks > 0 ? "yes" : "no");
    fig.setAttribute("data-size", box ? Math.round(box.width) + "x" + Math.round(box.height) : "0x0");
    fig.setAttribute("data-marks", marks);
  }});
  document.body.setAttribute("data-report-ready", "yes");
}});
</script>
</body></html>
"""


def build_report(metrics_dir: str = "metrics", plots_dir: str = "plots", out: str = "reports/run.html",
                 data_dir: str = "reports/plots", summary: str = "metrics/run_summary.json",
                 dvc_template: str | None = "reports/dvc_plots_offline.html") -> dict:
    """Write the page, the plots' CSVs and DVC templates; returns {plot: rows, ...} and what is missing."""
    mdir, pdir, ddir = Path(metrics_dir), Path(plots_dir), Path(data_dir)
    missing: dict[str, list[str]] = {name: [] for name in PLOTS}
    acc_rows, acc_table = accounting_rows(mdir, pdir, missing["accounting"])
    data = {"accuracy": accuracy_rows(mdir, pdir, missing["accuracy"]),
            "reliability": reliability_rows(pdir, mdir, missing["reliability"]),
            "funnel": funnel_rows(mdir, pdir, missing["funnel"]),
            "accounting": acc_rows}
    tables = {"accounting": acc_table}
    for r in rounds(mdir, pdir):
        quality = ((_load(mdir / f"round-{r}" / "labels.json") or {}).get("quality") or {})
        for labeler, kinds in sorted(quality.items()):
            for kind, q in sorted((kinds or {}).items()):
                if isinstance(q, dict):
                    tables.setdefault("reliability", []).append(
                        {"round": r, "labeler": labeler, "target": kind, "n": q.get("n"),
                         **{k: (round(q[k], 4) if isinstance(q.get(k), float) else q.get(k))
                            for k in ("accuracy", "ece", "brier", "auroc")}})
    sections = []
    rendered = {}
    for name, plot in PLOTS.items():
        template = plot["template"]()
        tpath = ddir / "templates" / f"{name}.json"
        tpath.parent.mkdir(parents=True, exist_ok=True)
        tpath.write_text(json.dumps(template, indent=1) + "\n")
        cpath = ddir / f"{name}.csv"
        write_csv(cpath, plot["columns"], data[name])
        parts = [f'<section id="{name}"><h2>{html.escape(plot["title"])}</h2>']
        if missing[name]:
            parts.append('<p class="missing">Missing: ' + "; ".join(html.escape(m) for m in missing[name]) + "</p>")
        rows = read_csv(cpath)
        if rows:
            svg = render_svg(fill(template, rows))
            rendered[name] = len(svg)
            parts.append(f'<figure class="plot" data-plot="{name}">{svg}</figure>')
        else:
            parts.append(f'<p class="missing">No data for this plot yet: {html.escape(plot["title"]).lower()} '
                         "appears once the stages that measure it have run.</p>")
        parts.append(_table(tables.get(name, [])))
        parts.append(f"<p><small>data: <code>{html.escape(str(cpath))}</code>, Vega-Lite template: "
                     f"<code>{html.escape(str(tpath))}</code></small></p></section>")
        sections.append("".join(parts))
    run_summary = _load(Path(summary)) if summary else None
    intro = (f"From <code>{html.escape(metrics_dir)}/</code> and <code>{html.escape(plots_dir)}/</code>, "
             f"written {time.strftime('%Y-%m-%d %H:%M:%S')}. "
             + (f"Run summary: <code>{html.escape(summary)}</code> ({len((run_summary or {}).get('stages', {}))} "
                "stages)." if run_summary else f"No run summary at <code>{html.escape(str(summary))}</code> yet."))
    page = PAGE.format(title="prefsynth run report", intro=intro, sections="\n".join(sections))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(page)
    if dvc_template:
        write_dvc_offline_template(dvc_template)
    return {"data": data, "missing": missing, "rendered": rendered, "out": out}


def write_dvc_offline_template(path: str) -> None:
    """A `dvc plots show --html-template` page with Vega, Vega-Lite and vega-embed inlined (no CDN)."""
    import vl_convert

    bundle = vl_convert.javascript_bundle().replace("</script", "<\\/script")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>DVC plots (offline)</title>\n"
                          f"<script>{bundle}</script>\n</head><body>\n{{plot_divs}}\n</body></html>\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="prefsynth report", description=__doc__.splitlines()[0])
    ap.add_argument("--metrics-dir", default="metrics")
    ap.add_argument("--plots-dir", default="plots")
    ap.add_argument("--out", default="reports/run.html")
    ap.add_argument("--data-dir", default="reports/plots", help="the plots' CSVs and DVC templates")
    ap.add_argument("--summary", default="metrics/run_summary.json")
    ap.add_argument("--dvc-template", default="reports/dvc_plots_offline.html",
                    help="write DVC's HTML page template with the JavaScript inlined ('' for none)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = build_report(args.metrics_dir, args.plots_dir, args.out, args.data_dir, args.summary,
                       args.dvc_template or None)
    gaps = sum(len(v) for v in res["missing"].values())
    log.info("[report] %d plots in %s (%.1fs)%s", len(res["rendered"]), args.out, time.perf_counter() - t0,
             f"; {gaps} missing pieces named on the page" if gaps else "")
    # the last line of `dvc repro`'s own output: where to look
    print(f"run summary: {args.summary}, report: {args.out}", flush=True)
