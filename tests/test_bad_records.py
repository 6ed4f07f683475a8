"""Bad input records of the prompts stage (issue 14): each class is a dead letter naming the record
(file:line) and field with its raw input kept, or kept and counted under its own name; the rest go
through and the books balance. Input files that cannot be read are one clear error naming the file."""

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefsynth.pipelines import prompts as prompts_stage
from prefsynth.schemas.io import read_records


def _run(tmp_path: Path, src: Path, name="run", **prompts):
    params = tmp_path / f"{name}.yaml"
    source = "parquet" if src.suffix == ".parquet" else "jsonl"
    params.write_text(json.dumps({"seed": 3, "max_dead_fraction": 1.0,
                                  "prompts": {"source": source, "path": str(src), "task": "gsm8k",
                                              "num_shards": 1, **prompts}}))
    out = tmp_path / name
    prompts_stage.main(["--params", str(params), "--out", str(out / "prompts"), "--dead", str(out / "dead"),
                        "--metrics", str(out / "metrics.json"), "--reports", str(out / "reports")])
    metrics = json.loads((out / "metrics.json").read_text())
    acc = metrics["accounting"]
    assert acc["balanced"] and acc["n_in"] == acc["n_out"] + acc["n_dropped"] + acc["n_dead"]
    good = read_records(str(out / "prompts"))
    dead = {d["record_id"]: d for d in read_records(str(out / "dead"))}
    assert len(good) == acc["n_out"] and len(dead) == acc["n_dead"]
    return good, dead, metrics


def _jsonl(tmp_path: Path, lines: list[str], name="in.jsonl") -> Path:
    src = tmp_path / name
    src.write_bytes("\n".join(lines).encode("utf-8") + b"\n")  # the lines are ASCII: escapes stay escapes
    return src


def _assert_dead(dead: dict, where: str, error_type: str, field: str, raw: str | None = None):
    d = dead[where]
    assert d["error_type"] == error_type, d
    assert f"{where}: field '{field}'" in d["message"], d["message"]
    assert d["stage"] == "prompts" and d["raw_input"]
    if raw is not None:
        assert d["raw_input"] == raw


def test_lone_surrogate_in_any_stored_text_field_is_a_dead_letter(tmp_path):
    lines = [
        r'{"id": "a", "question": "What is 2+2?", "answer": "#### 4"}',
        r'{"id": "b", "question": "Half of \ud800 10?", "answer": "#### 5"}',
        r'{"id": "c", "question": "What is 3+3?", "answer": "#### 6\udfff"}',
        r'{"id": "d\ud83d", "question": "What is 4+4?", "answer": "#### 8"}',
        r'{"id": "e", "question": "What is 5+5?", "answer": "#### 10", "split": "te\ud800st"}',
        r'{"id": "f", "question": "What is 6+6?", "answer": "#### 12", "note": ["ok", {"x": "\udc80"}]}',
        r'{"id": "g", "question": "What is 7+7?", "answer": "#### 14", "k\ud800ey": 1}',
        r'{"id": "h", "question": "What is 8+8? \ud83d\ude00", "answer": "#### 16", "split": "test"}',
    ]
    good, dead, metrics = _run(tmp_path, _jsonl(tmp_path, lines), id_field="id", split_field="split")
    assert metrics["accounting"]["dead"] == {"invalid_text": 6}
    assert metrics["split_by_hash"] == 1  # "a" has no split field: counted, its split is by hash
    # a proper surrogate pair is one character (an emoji), not an error
    assert sorted(r["prompt_id"] for r in good) == ["a", "h"]
    assert {r["prompt_id"]: r["split"] for r in good}["h"] == "test"
    assert next(r for r in good if r["prompt_id"] == "h")["question"].endswith("\U0001F600")
    for where, field in [("in.jsonl:2", "question"), ("in.jsonl:3", "answer"), ("in.jsonl:4", "id"),
                         ("in.jsonl:5", "split"), ("in.jsonl:6", "metadata.note"), ("in.jsonl:7", "metadata")]:
        n = int(where.rsplit(":", 1)[1])
        _assert_dead(dead, where, "invalid_text", field, raw=lines[n - 1])
        assert "lone surrogate" in dead[where]["message"]


def test_unusable_answers_are_bad_answer_dead_letters(tmp_path):
    lines = [
        '{"question": "What is 2+2?", "answer": "#### 4"}',
        '{"question": "q seven", "answer": "#### seven"}',
        '{"question": "q empty", "answer": "#### "}',
        '{"question": "q apples", "answer": "She has 5.\\n#### 5 apples"}',
        '{"question": "q nan", "answer": NaN}',
        '{"question": "q inf", "answer": Infinity}',
        '{"question": "q overflow", "answer": 1e400}',
        '{"question": "q blank", "answer": "   "}',
        '{"question": "What is 3+3?", "answer": 6}',
    ]
    good, dead, metrics = _run(tmp_path, _jsonl(tmp_path, lines))
    assert metrics["accounting"]["dead"] == {"bad_answer": 7}
    assert {r["question"]: r["reference_answer"] for r in good} == {"What is 2+2?": "4", "What is 3+3?": "6"}
    for n in range(2, 9):
        _assert_dead(dead, f"in.jsonl:{n}", "bad_answer", "answer", raw=lines[n - 1])
    assert "'seven' is not a number" in dead["in.jsonl:2"]["message"]
    assert "'5 apples' is not a number" in dead["in.jsonl:4"]["message"]
    assert "is nan" in dead["in.jsonl:5"]["message"] and "is inf" in dead["in.jsonl:7"]["message"]
    assert metrics["without_reference"] == 0


def test_question_with_nul_or_only_control_characters_is_a_dead_letter(tmp_path):
    lines = [
        '{"question": "What is 2+2?", "answer": "#### 4"}',
        '{"question": "What\\u0000 is 3+3?", "answer": "#### 6"}',
        '{"question": "\\u0001\\u0002\\u001b", "answer": "#### 1"}',
        '{"question": "\\u200b\\ufeff\\t\\u00a0", "answer": "#### 1"}',
        '{"question": "Tab\\tand\\nnewline are fine", "answer": "#### 2", "id": "x\\u0000"}',
        '{"question": "An id with NUL", "answer": "#### 2", "id": "x\\u0000"}',
        '{"question": "An id that is NaN", "answer": "#### 2", "id": NaN}',
    ]
    good, dead, metrics = _run(tmp_path, _jsonl(tmp_path, lines[:5]), "q")
    assert metrics["accounting"]["dead"] == {"invalid_text": 1, "empty_text": 2}
    assert sorted(r["question"] for r in good) == ["Tab\tand\nnewline are fine", "What is 2+2?"]
    _assert_dead(dead, "in.jsonl:2", "invalid_text", "question", raw=lines[1])
    assert "NUL" in dead["in.jsonl:2"]["message"]
    _assert_dead(dead, "in.jsonl:3", "empty_text", "question", raw=lines[2])
    _assert_dead(dead, "in.jsonl:4", "empty_text", "question", raw=lines[3])
    assert "control" in dead["in.jsonl:3"]["message"]

    # the id field: a NUL or a NaN is no id
    ids = _jsonl(tmp_path, [r.replace("}", ', "id": "ok"}') for r in lines[:1]] + lines[5:], "ids.jsonl")
    good, dead, metrics = _run(tmp_path, ids, "ids", id_field="id")
    assert metrics["accounting"]["dead"] == {"invalid_text": 1, "wrong_type": 1}
    assert [r["prompt_id"] for r in good] == ["ok"]
    _assert_dead(dead, "ids.jsonl:2", "invalid_text", "id")
    _assert_dead(dead, "ids.jsonl:3", "wrong_type", "id")


def test_missing_reference_is_a_dead_letter_unless_the_task_needs_none(tmp_path):
    lines = [
        '{"question": "What is 2+2?", "answer": "#### 4"}',
        '{"question": "No answer field"}',
        '{"question": "A null answer", "answer": null}',
        '{"question": "Write a haiku about rain."}',
    ]
    src = _jsonl(tmp_path, lines)
    good, dead, metrics = _run(tmp_path, src, "gsm8k")
    assert metrics["accounting"]["dead"] == {"missing_reference": 3}
    assert [r["question"] for r in good] == ["What is 2+2?"]
    for n in (2, 3, 4):
        _assert_dead(dead, f"in.jsonl:{n}", "missing_reference", "answer", raw=lines[n - 1])
        assert "task 'gsm8k' needs a reference answer" in dead[f"in.jsonl:{n}"]["message"]
    assert metrics["without_reference"] == 0

    # a judge-only task keeps prompts without a reference, and counts them under their own name
    good, dead, metrics = _run(tmp_path, src, "chat", task="chat")
    assert metrics["accounting"]["dead"] == {} and metrics["accounting"]["n_out"] == 4
    assert metrics["without_reference"] == 3
    assert sum(r["reference_answer"] is None for r in good) == 3
    # ... but a NaN where the reference goes is still not a reference
    nan = _jsonl(tmp_path, ['{"question": "Say hi.", "answer": NaN}', '{"question": "Say bye."}'], "nan.jsonl")
    good, dead, metrics = _run(tmp_path, nan, "chat_nan", task="chat")
    assert metrics["accounting"]["dead"] == {"bad_answer": 1} and metrics["without_reference"] == 1
    _assert_dead(dead, "nan.jsonl:1", "bad_answer", "answer")


def test_metadata_is_strict_json_and_odd_values_are_named(tmp_path):
    lines = [
        '{"question": "What is 2+2?", "answer": "#### 4", "score": NaN, "more": [1, -Infinity, {"a": NaN}]}',
        '{"question": "What is 3+3?", "answer": "#### 6", "score": 0.5}',
        '{"question": "Huge number", "answer": "#### 1", "n": ' + "9" * 5000 + "}",
        "[" * 100_000 + "]" * 100_000,
        '\ufeff{"question": "After a BOM", "answer": "#### 1"}',
    ]
    good, dead, metrics = _run(tmp_path, _jsonl(tmp_path, lines))
    assert metrics["accounting"]["dead"] == {"invalid_json": 2}
    by_q = {r["question"]: r for r in good}
    assert sorted(by_q) == ["After a BOM", "What is 2+2?", "What is 3+3?"]

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in metadata"))

    assert strict(by_q["What is 2+2?"]["metadata"]) == {"score": None, "more": [1, None, {"a": None}]}
    assert strict(by_q["What is 3+3?"]["metadata"]) == {"score": 0.5}
    assert metrics["metadata_non_finite_as_null"] == 1  # records, not values
    for where in ("in.jsonl:3", "in.jsonl:4"):
        assert dead[where]["message"].startswith(f"{where}: invalid JSON") and dead[where]["raw_input"]


def test_parquet_nan_answers_and_odd_metadata(tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({
        "question": ["What is 2+2?", "What is 3+3?", "What is 4+4?", "What is 5+5?", None],
        "answer": [4.0, math.nan, 8.0, 10.0, 1.0],
        "difficulty": [1.0, 2.0, math.nan, 3.0, 1.0],
        "blob": [b"text", b"x", b"y", b"\xff\xfe", b"z"],
    }), src)
    good, dead, metrics = _run(tmp_path, src)
    assert metrics["accounting"]["dead"] == {"bad_answer": 1, "wrong_type": 1, "missing_field": 1}
    by_q = {r["question"]: r for r in good}
    assert sorted(by_q) == ["What is 2+2?", "What is 4+4?"]
    assert json.loads(by_q["What is 2+2?"]["metadata"]) == {"blob": "text", "difficulty": 1.0}
    assert json.loads(by_q["What is 4+4?"]["metadata"]) == {"blob": "y", "difficulty": None}
    assert metrics["metadata_non_finite_as_null"] == 1
    _assert_dead(dead, "in.parquet:row2", "bad_answer", "answer")
    _assert_dead(dead, "in.parquet:row4", "wrong_type", "blob")
    _assert_dead(dead, "in.parquet:row5", "missing_field", "question")
    assert "not UTF-8" in dead["in.parquet:row4"]["message"]
    assert "What is 3+3?" in dead["in.parquet:row2"]["raw_input"]  # the raw row is kept


def test_parquet_string_that_is_not_utf8_is_a_dead_letter(tmp_path):
    def strings(*values):  # Arrow writes string columns without checking their bytes
        return pa.array(values, pa.binary()).view(pa.string())

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({
        "question": strings(b"What is 2+2?", b"caf\xe9?", b"What is 3+3?"),
        "answer": ["#### 4", "#### 1", "#### 6"],
        "note": strings(b"fine", b"fine", b"bad \xff"),
    }), src)
    good, dead, metrics = _run(tmp_path, src)
    assert metrics["accounting"]["dead"] == {"invalid_utf8": 2}
    assert [r["question"] for r in good] == ["What is 2+2?"]
    _assert_dead(dead, "in.parquet:row2", "invalid_utf8", "question")
    _assert_dead(dead, "in.parquet:row3", "invalid_utf8", "note")
    assert "What is 3+3?" in dead["in.parquet:row3"]["raw_input"]


def test_unreadable_input_files_are_one_clear_error(tmp_path):
    lines = ['{"question": "What is 2+2?", "answer": "#### 4"}']
    as_parquet = _jsonl(tmp_path, lines, "prompts.parquet")
    with pytest.raises(ValueError, match=r"prompts\.parquet: not a Parquet file .*set prompts\.source: jsonl"):
        _run(tmp_path, as_parquet)
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: no such file"):
        _run(tmp_path, tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match=r"nope\.parquet: no such file"):
        _run(tmp_path, tmp_path / "nope.parquet")
    real = tmp_path / "real.parquet"
    pq.write_table(pa.table({"text": ["What is 2+2?"], "answer": ["#### 4"]}), real)
    as_jsonl = tmp_path / "real.jsonl"
    as_jsonl.write_bytes(real.read_bytes())
    with pytest.raises(ValueError, match=r"real\.jsonl: a Parquet file, not JSON lines; set prompts\.source: parquet"):
        _run(tmp_path, as_jsonl)
    with pytest.raises(ValueError, match=r"real\.parquet: no column 'question' \(prompts\.question_field\).*'text'"):
        _run(tmp_path, real)
    with pytest.raises(ValueError, match=r"no column 'solution' \(prompts\.answer_field\) \(task 'gsm8k' needs"):
        _run(tmp_path, real, question_field="text", answer_field="solution")
    # with the right column names the same file goes through
    good, dead, metrics = _run(tmp_path, real, "ok", question_field="text")
    assert [r["reference_answer"] for r in good] == ["4"] and not dead
