"""Validate a written dataset with its Great Expectations suite (offline, ephemeral context).

A failure raises ValidationFailed with a short summary — which expectation, how many rows,
example values — and the full Data Docs HTML is written under reports/gx/<stage>/.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import pyarrow as pa

from prefsynth.schemas.expectations import expectations, validation_frame

log = logging.getLogger("prefsynth")


class ValidationFailed(RuntimeError):
    pass


@dataclass
class ValidationReport:
    dataset: str
    stage: str
    rows: int
    success: bool
    failures: list[str] = field(default_factory=list)
    n_expectations: int = 0
    docs: str | None = None

    def summary(self) -> str:
        head = (f"{self.stage}: {self.dataset} ({self.rows} rows) "
                f"{'passed' if self.success else 'FAILED'} {self.n_expectations} expectations")
        return "\n".join([head, *("  - " + f for f in self.failures)])


def _describe(res, rows: int) -> str:
    cfg = res.expectation_config
    column = cfg.kwargs.get("column")
    r = res.result or {}
    n_bad = r.get("unexpected_count")
    examples = (r.get("partial_unexpected_list") or [])[:5]
    extra = {k: v for k, v in cfg.kwargs.items() if k in ("min_value", "max_value") and v is not None}
    if "value_set" in cfg.kwargs and len(cfg.kwargs["value_set"]) <= 4:
        extra["value_set"] = cfg.kwargs["value_set"]
    where = f"{column}" + (f" {extra}" if extra else "")
    count = f"{n_bad} of {rows} rows" if n_bad is not None else "failed"
    return f"{cfg.type}({where}): {count}" + (f", e.g. {examples}" if examples else "")


def validate_table(table: pa.Table, dataset: str, stage: str, refs: dict | None = None,
                   reports_dir: str | None = "reports", raise_on_failure: bool = True) -> ValidationReport:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    # this module sets its own logger to INFO at import and logs `Created temporary directory ... for
    # ephemeral docs site` for every context: nothing a user can act on
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    df = validation_frame(dataset, table)
    ctx = gx.get_context(mode="ephemeral")
    try:  # no progress bars in stage logs
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    except (ImportError, AttributeError):
        pass
    docs_dir = None
    if reports_dir:
        docs_dir = os.path.abspath(os.path.join(reports_dir, "gx", stage))
        ctx.add_data_docs_site(site_name="prefsynth", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    batch_def = (ctx.data_sources.add_pandas(stage).add_dataframe_asset(name=dataset)
                 .add_batch_definition_whole_dataframe("all"))
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"{stage}.{dataset}"))
    for exp in expectations(dataset, refs):
        suite.add_expectation(exp)
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{stage}.{dataset}", data=batch_def, suite=suite))
    actions = [gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["prefsynth"])] if docs_dir else []
    checkpoint = ctx.checkpoints.add(gx.Checkpoint(name=f"{stage}.{dataset}", validation_definitions=[vd],
                                                   actions=actions, result_format={"result_format": "SUMMARY"}))
    result = checkpoint.run(batch_parameters={"dataframe": df})
    run = next(iter(result.run_results.values()))
    failures = [_describe(r, len(df)) for r in run.results if not r.success]
    report = ValidationReport(dataset, stage, len(df), bool(result.success), failures, len(run.results),
                              os.path.join(docs_dir, "index.html") if docs_dir else None)
    if report.success:
        log.info("[%s] %s: %d rows pass %d expectations", stage, dataset, len(df), len(run.results))
    elif raise_on_failure:
        raise ValidationFailed(report.summary() + (f"\n  Data Docs: {report.docs}" if report.docs else ""))
    return report
