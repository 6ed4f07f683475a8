"""Stage-level guards of run_stage: a stage whose books balance but whose output is empty, or whose
dead share exceeds `max_dead_fraction`, fails with one line; its dead letters are committed all
the same so the user can read them, and nothing else is replaced."""

import json

import pytest

from prefsynth.pipelines import prompts as prompts_stage
from prefsynth.pipelines.accounting import Account, StageGuardError, guard_problem
from prefsynth.schemas.io import read_records


def _run(tmp_path, name, lines: list[bytes], **top):
    src = tmp_path / f"{name}.jsonl"
    src.write_bytes(b"".join(line + b"\n" for line in lines))
    params = tmp_path / f"{name}.params.json"
    params.write_text(json.dumps({"seed": 5, **top, "prompts": {"source": "jsonl", "path": str(src), "task": "gsm8k",
                                                                "max_prompt_chars": 40}}))
    out = tmp_path / name
    prompts_stage.main(["--params", str(params), "--out", str(out / "prompts"), "--dead", str(out / "dead"),
                        "--metrics", str(out / "metrics.json"), "--reports", str(out / "reports")])
    return out


GOOD = b'{"question": "What is 2+2?", "answer": "#### 4"}'
LONG = b'{"question": "' + b"y" * 60 + b'", "answer": "#### 1"}'


def test_guard_rules():
    acc = lambda n_in, out, dead: Account("s", n_in, out, dead={"bad": dead} if dead else {})  # noqa: E731
    assert guard_problem(acc(0, 0, 0), 0.5) == "its input is empty (0 records)"
    assert "3 of 4 input records (75%) are dead letters (bad=3), more than max_dead_fraction=0.5" in \
        guard_problem(acc(4, 1, 3), 0.5)
    assert guard_problem(acc(4, 2, 2), 0.5) is None  # exactly the limit is allowed
    assert "output is empty" in guard_problem(Account("s", 3, 0, dropped={"dup": 3}), 0.5)
    assert all(guard_problem(a, 1.0) is None for a in (acc(0, 0, 0), acc(4, 0, 4)))  # 1: guard off


def test_an_empty_input_fails_with_one_line(tmp_path, caplog):
    with pytest.raises(StageGuardError, match=r"\[prompts\] failed: its input is empty \(0 records\)"):
        _run(tmp_path, "empty", [])
    assert read_records(str(tmp_path / "empty" / "dead")) == []  # committed (empty), readable
    assert not (tmp_path / "empty" / "prompts").exists()  # nothing else committed
    assert not (tmp_path / "empty" / "prompts.partial").exists()
    assert sum("failed: its input is empty" in r.getMessage() for r in caplog.records) == 1


def test_all_dead_fails_but_the_dead_letters_are_written(tmp_path):
    with pytest.raises(StageGuardError, match=r"3 of 3 input records \(100%\) are dead letters \(too_long=3\), "
                                              r"more than max_dead_fraction=0.5; 3 dead letters written to"):
        _run(tmp_path, "dead", [LONG, LONG.replace(b"#### 1", b"#### 2"), LONG.replace(b"#### 1", b"#### 3")])
    dead = read_records(str(tmp_path / "dead" / "dead"))
    assert len(dead) == 3 and all(d["error_type"] == "too_long" and d["raw_input"] for d in dead)
    assert not (tmp_path / "dead" / "prompts").exists()


def test_dead_share_within_the_limit_passes_and_the_limit_is_a_param(tmp_path):
    out = _run(tmp_path, "mixed", [GOOD, GOOD.replace(b"2+2", b"3+3").replace(b"4", b"6"), LONG])  # 1 of 3 dead
    acc = json.loads((out / "metrics.json").read_text())["accounting"]
    assert acc["n_in"] == 3 and acc["n_out"] == 2 and acc["n_dead"] == 1 and acc["balanced"]
    with pytest.raises(StageGuardError, match="more than max_dead_fraction=0.2"):
        _run(tmp_path, "strict", [GOOD, LONG], max_dead_fraction=0.2)
    out = _run(tmp_path, "lenient", [LONG], max_dead_fraction=1)  # 1 turns the guard off
    acc = json.loads((out / "metrics.json").read_text())["accounting"]
    assert acc["n_out"] == 0 and acc["n_dead"] == 1 and acc["balanced"]
