"""`prefsynth report`: one HTML page with every plot of the run, checked in a real headless browser
(Debian's chromium) with the network cut off; `dvc plots show` renders the same templates."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prefsynth.report import PLOTS, build_report, dvc_plot_definitions

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_browser = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("PREFSYNTH_REQUIRE_BROWSER"),
    reason="no chromium (apt-get install chromium; .ci/run installs it and sets PREFSYNTH_REQUIRE_BROWSER)")


def chromium_dom(url: str, tmp_path: Path, budget_ms: int = 8000) -> str:
    """The DOM after the page loaded and its scripts ran, with every host name unresolvable (no network)."""
    assert CHROMIUM, "chromium is required here (PREFSYNTH_REQUIRE_BROWSER is set)"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--window-size=1400,3000", f"--virtual-time-budget={budget_ms}", "--dump-dom", url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _acc(stage, n_in, n_out, dropped=None, dead=None, wall_s=1.0):
    dropped, dead = dropped or {}, dead or {}
    return {"stage": stage, "n_in": n_in, "n_out": n_out, "dropped": dropped, "dead": dead,
            "n_dropped": sum(dropped.values()), "n_dead": sum(dead.values()), "balanced": True, "wall_s": wall_s}


def _policy(greedy, n=200):
    return {"greedy_accuracy": greedy, "maj_at_8": greedy - 0.02, "pass_at_8": 0.79, "sample_accuracy": greedy - 0.1,
            "per_step_accuracy": greedy + 0.1, "n_prompts": n,
            "ci95": {"greedy_accuracy": [round(greedy - 0.07, 4), round(greedy + 0.07, 4)],
                     "maj_at_8": [round(greedy - 0.09, 4), round(greedy + 0.05, 4)]}}


def write_run(root: Path, rounds=(1, 2)) -> None:
    """A small, realistic run: what the stages write into metrics/ and plots/."""
    m, p = root / "metrics", root / "plots"
    (m).mkdir(parents=True)
    (m / "prompts.json").write_text(json.dumps({"accounting": _acc("prompts", 3000, 2954, {"duplicate_problem": 46})}))
    (m / "bootstrap.json").write_text(json.dumps({"greedy_accuracy": 0.52}))
    (m / "run_summary.json").write_text(json.dumps({"stages": {"prompts": {"n_in": 3000}}}))
    for r in rounds:
        rd = m / f"round-{r}"
        rd.mkdir()
        base = 0.5 + 0.03 * (r - 1)
        policies = {"policy-0": _policy(0.5), f"policy-{r - 1}": _policy(base), f"policy-{r}": _policy(base + 0.03)}
        (rd / "evaluate.json").write_text(json.dumps({"baseline": "policy-0", "split": "test", "policies": policies,
                                                      "validation": {"split": "validation", "n_prompts": 100,
                                                                     "policies": policies}}))
        (rd / "generate.json").write_text(json.dumps({"accounting": _acc("generate", 2365, 2365, wall_s=24.7)}))
        (rd / "labels.json").write_text(json.dumps({
            "accounting": _acc("label", 20920, 20920),
            "quality": {"p_true": {"response": {"accuracy": 0.4985, "auroc": 0.447, "brier": 0.2529, "ece": 0.0623,
                                                "n": 2000}},
                        "mc_binary": {"step": {"accuracy": 0.87, "auroc": 0.92, "brier": 0.107, "ece": 0.112,
                                               "n": 2107}}}}))
        (rd / "candidates.json").write_text(json.dumps({
            "accounting": _acc("candidates", 2365, 2137, {"no_contrast": 228}),
            "precision": {"response/self_consistency": {"pairs": 3714, "precision": 0.39},
                          "step/mcts_q": {"pairs": 678, "precision": 0.72}}}))
        steps = lambda pairs, prec: {k: {"pairs": n, "precision": q, "kept_fraction": round(n / pairs[0], 4)}  # noqa: E731
                                     for k, n, q in zip(["candidates", "after_agreement_filter",
                                                         "after_upo_contradiction", "after_upo", "final"], pairs, prec)}
        (rd / "pairs.json").write_text(json.dumps({
            "accounting": _acc("pairs", 11158, 7395, {"low_agreement": 1598, "upo_contradicted": 1144,
                                                      "duplicate": 952, "contradicts_trusted": 69}, {"bad_pair": 2}),
            "precision": {"response/self_consistency": steps([2586, 1486, 820, 820, 220], [0.39, 0.55, 0.67, 0.67, None]),
                          "step/mcts_q": steps([461, 461, 322, 322, 225], [0.73, 0.73, 0.80, 0.80, 0.74]),
                          "response/verifier_arith": steps([1877] * 5, [1.0] * 5)}}))
        _write_csv(p / f"round-{r}" / "accuracy.csv",
                   [{"round": i, "policy": k, "greedy_accuracy": v["greedy_accuracy"]} for i, (k, v) in
                    enumerate(policies.items())])
        for name, bins in {"p_true_response": [(0.38, 0.33, 92), (0.45, 0.45, 1324), (0.53, 0.34, 563)],
                           "mc_binary_step": [(0.0, 0.10, 1024), (0.125, 0.74, 62), (0.875, 0.95, 300)]}.items():
            _write_csv(p / f"round-{r}" / "reliability" / f"{name}.csv",
                       [{"bin": i, "lower": i / 10, "upper": (i + 1) / 10, "confidence": c, "accuracy": a, "count": n}
                        for i, (c, a, n) in enumerate(bins)])


def _build(root: Path, **kw) -> dict:
    return build_report(str(root / "metrics"), str(root / "plots"), str(root / "reports" / "run.html"),
                        str(root / "reports" / "plots"), str(root / "metrics" / "run_summary.json"), **kw)


@needs_browser
def test_report_page_renders_every_plot_in_headless_chromium(tmp_path):
    write_run(tmp_path)
    res = _build(tmp_path, dvc_template=None)
    assert not any(res["missing"].values()), res["missing"]
    dom = chromium_dom((tmp_path / "reports" / "run.html").as_uri(), tmp_path)
    assert 'data-report-ready="yes"' in dom  # the page's own script ran after layout
    figures = {m.group(1): m.group(0) for m in re.finditer(r'<figure class="plot" data-plot="(\w+)"[^>]*>', dom)}
    assert set(figures) == set(PLOTS), figures
    for name, tag in figures.items():
        assert 'data-rendered="yes"' in tag, (name, tag)
        w, h = map(int, re.search(r'data-size="(\d+)x(\d+)"', tag).groups())
        marks = int(re.search(r'data-marks="(\d+)"', tag).group(1))
        assert w > 100 and h > 50 and marks > 10, (name, tag)
    # what the plots show: both rounds, every funnel source, every stage with accounting
    for text in ("response/self_consistency", "step/mcts_q", "pairs@2", "candidates@2", "generate@1", "p_true_response",
                 "mc_binary_step", "greedy_accuracy", "validation"):
        assert text in dom, text
    assert "Missing:" not in dom


def test_report_names_what_is_missing_and_still_writes_the_page(tmp_path):
    write_run(tmp_path, rounds=(1,))
    rd = tmp_path / "metrics" / "round-1"
    (rd / "pairs.json").unlink()
    (rd / "evaluate.json").unlink()
    shutil.rmtree(tmp_path / "plots" / "round-1" / "reliability")
    res = _build(tmp_path, dvc_template=None)
    page = (tmp_path / "reports" / "run.html").read_text()
    assert "metrics/round-1/pairs.json (only the candidates, from candidates.json)" in page
    assert "metrics/round-1/evaluate.json (accuracy of round 1 read from" in page
    assert "plots/round-1/reliability/*.csv" in page
    # the funnel falls back to the candidates of candidates.json, accuracy to the evaluate stage's CSV
    assert {r["filter"] for r in res["data"]["funnel"]} == {"candidates"}
    assert {r["metric"] for r in res["data"]["accuracy"]} == {"greedy_accuracy"}
    assert set(res["rendered"]) == {"accuracy", "funnel", "accounting"}
    assert "No data for this plot yet" in page  # reliability

    empty = tmp_path / "empty"
    empty.mkdir()
    res = _build(empty, dvc_template=None)
    assert res["rendered"] == {}
    page = (empty / "reports" / "run.html").read_text()
    assert page.count("No data for this plot yet") == len(PLOTS)
    assert "with an `accounting` section" in page


def test_dvc_yaml_report_stage_declares_the_report_plots():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]
    declared = {k: v for item in stage["plots"] for k, v in item.items()}
    assert declared == dvc_plot_definitions()
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
    assert {"reports/run.html", "reports/plots/templates"} <= set(outs)
    assert {"metrics", "plots"} <= set(stage["deps"])


def test_cli_report_ends_with_the_run_summary_line(tmp_path):
    write_run(tmp_path, rounds=(1,))
    res = subprocess.run([sys.executable, "-m", "prefsynth", "report", "--dvc-template", ""], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == "run summary: metrics/run_summary.json, report: reports/run.html"
    assert "apitools" not in res.stderr and "ephemeral docs site" not in res.stderr
    assert (tmp_path / "reports" / "run.html").stat().st_size > 10_000


@needs_browser
def test_dvc_plots_show_renders_the_same_plots_offline(tmp_path):
    # a DVC project holding just the report stage of dvc.yaml, over the report's files
    write_run(tmp_path)
    _build(tmp_path, dvc_template=str(tmp_path / "reports" / "dvc_plots_offline.html"))
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"report": {
        "cmd": "true", "outs": stage["outs"], "plots": stage["plots"]}}}, sort_keys=False))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True, env=env, timeout=120)
    res = subprocess.run([dvc, "plots", "show", "--html-template", "reports/dvc_plots_offline.html", "-o", "dvc_plots"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    page = (tmp_path / "dvc_plots" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page
    for name in PLOTS:  # DVC filled our template, not one of its own
        assert f"reports/plots/{name}.csv" in page
    dom = chromium_dom((tmp_path / "dvc_plots" / "index.html").as_uri(), tmp_path)
    # vega-embed draws each plot into a canvas (or an svg) inside its div
    drawn = re.findall(r'<canvas[^>]*width="(\d+)"[^>]*height="(\d+)"', dom) + \
        re.findall(r'<svg[^>]*class="marks"[^>]*width="(\d+)"[^>]*height="(\d+)"', dom)
    assert len([1 for w, h in drawn if int(w) > 100 and int(h) > 50]) >= len(PLOTS), (drawn, dom[-3000:])
