"""The report's plots: one Vega-Lite spec per plot, written as a DVC plot template over its CSV, with
its title, columns and DVC x/y (PLOTS), and the `plots:` entries of dvc.yaml they make.
"""

from __future__ import annotations

DATA_ANCHOR = "<DVC_METRIC_DATA>"
SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
FUNNEL_STEPS = [("candidates", "candidates"), ("after_agreement_filter", "agreement filter"),
                ("after_upo_contradiction", "UPO contradiction"), ("after_upo", "UPO"),
                ("final", "final (dedupe + source gate)")]


def _num(field: str) -> dict:
    return {"calculate": f"toNumber(datum['{field}'])", "as": field}


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
