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

    plots.py  the Vega-Lite templates, PLOTS, the dvc.yaml `plots:` entries
    rows.py   reading metrics/ and plots/ into each plot's rows
    page.py   the CSVs, the inline SVGs, the page; build_report
"""

from __future__ import annotations

import argparse
import logging
import time

from prefsynth.report.page import build_report
from prefsynth.report.plots import PLOTS, dvc_plot_definitions

__all__ = ["PLOTS", "build_report", "dvc_plot_definitions", "main"]
log = logging.getLogger("prefsynth")


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
