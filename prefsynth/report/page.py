"""Writing the report: the CSVs and templates DVC reads, each plot rendered to inline SVG (vl-convert,
no browser, no network), the one HTML page, and DVC's offline page template.
"""

from __future__ import annotations

import copy
import csv
import html
import json
import time
from pathlib import Path

from prefsynth.report.plots import PLOTS
from prefsynth.report.rows import load_json, accounting_rows, accuracy_rows, funnel_rows, reliability_rows, rounds


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
        quality = ((load_json(mdir / f"round-{r}" / "labels.json") or {}).get("quality") or {})
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
    run_summary = load_json(Path(summary)) if summary else None
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
