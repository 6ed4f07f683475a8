"""Beam runner options from params.yaml.

The local default is FnApiRunner: in-process, `direct_num_workers` wide, and it never tries to
download Prism (DirectRunner does, and falls back only after a network error). Presets in
params.yaml (`beam.presets.flink`, `beam.presets.dataflow`) add the options a cluster needs;
`beam.preset` picks one. See README, "Runners".
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from prefsynth.config import BeamConfig

LOCAL_RUNNERS = {"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner"}
RUNNING_MODES = {"in_memory", "multi_threading", "multi_processing"}


def options_dict(cfg: BeamConfig) -> dict:
    """The keyword options a PipelineOptions is built from (checked, so errors name the param)."""
    opts: dict = {"runner": cfg.runner}
    if cfg.preset != "local":
        if cfg.preset not in cfg.presets:
            raise ValueError(f"params.yaml: beam.preset={cfg.preset!r} has no block under beam.presets "
                             f"(have: {sorted(cfg.presets)})")
    opts.update(cfg.presets.get(cfg.preset) or {})
    if opts["runner"] in LOCAL_RUNNERS:
        if cfg.direct_running_mode not in RUNNING_MODES:
            raise ValueError(f"params.yaml: beam.direct_running_mode must be one of {sorted(RUNNING_MODES)}, "
                             f"got {cfg.direct_running_mode!r}")
        if cfg.direct_num_workers < 1:
            raise ValueError("params.yaml: beam.direct_num_workers must be >= 1")
        opts.setdefault("direct_num_workers", cfg.direct_num_workers)
        # One worker in memory; more workers need a mode that actually runs them in parallel.
        mode = cfg.direct_running_mode
        if cfg.direct_num_workers > 1 and mode == "in_memory":
            mode = "multi_processing"
        opts.setdefault("direct_running_mode", mode)
    return opts


def pipeline_options(cfg: BeamConfig) -> PipelineOptions:
    # flags=[]: never parse sys.argv (the stage's own CLI flags are not Beam's).
    return PipelineOptions(flags=[], **options_dict(cfg))
