"""Smoke test of the record benchmarks' pieces (fast: no Beam pipeline): the plain pyarrow script
and the stage's own core write the same bytes on a small synthetic input, and the candidates/pairs core
rows run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import records_throughput as rt  # noqa: E402


def test_plain_script_writes_the_stage_core_bytes(tmp_path):
    src = tmp_path / "in.jsonl"
    rt.make_input(src, 3000)  # broken lines and duplicates included
    n_plain = rt.plain(src, tmp_path / "plain")
    n_core = rt.plain_same_core(src, tmp_path / "core")
    assert n_plain == n_core and n_core[0] > 0 and n_core[1] > 0
    assert rt.parquet_bytes(tmp_path / "plain") == rt.parquet_bytes(tmp_path / "core")


def test_other_stage_cores_run():
    s, n_in, n_out = rt.candidates_core(50)
    assert n_in == 400 and 0 < n_out
    s, n_in, n_out = rt.pairs_core(400)
    assert n_in == 400 and 0 < n_out < 400
