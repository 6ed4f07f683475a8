import collections
import json
from pathlib import Path

import pytest

from prefsynth.config import load_params
from prefsynth.pipelines import prompts as prompts_stage
from prefsynth.pipelines.accounting import Account, AccountingError, StageGuardError
from prefsynth.pipelines.staging import staging_path
from prefsynth.schemas.io import dataset_files, read_records


def _params(tmp_path: Path, **groups) -> str:
    text = {"seed": 5, **groups}
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps(text))  # JSON is YAML
    return str(path)


def _run(tmp_path, params_path, name="run"):
    out = tmp_path / name
    prompts_stage.main(["--params", params_path, "--out", str(out / "prompts"), "--dead", str(out / "dead"),
                        "--metrics", str(out / "metrics.json"), "--reports", str(out / "reports")])
    return out, json.loads((out / "metrics.json").read_text())


BAD_LINES = [
    b'{"question": "What is 2+2?", "answer": "#### 4"}',
    b'{"question": "What is 3+3?", "answer": "#### 6", "source_note": "kept as metadata"}',
    b"{not json",
    b'["a", "list"]',
    b'{"answer": "#### 1"}',
    b'{"question": 17, "answer": "#### 1"}',
    b'{"question": "   ", "answer": "#### 1"}',
    b'{"question": "' + b"x" * 500 + b'", "answer": "#### 1"}',
    b'{"question": "caf\xe9?", "answer": "#### 1"}',
    b'{"question": "What is 2+2?", "answer": "#### 4"}',
    b"",
    b'{"question": "Bad answer field", "answer": ["#### 1"]}',
    b'{"question": "No final line", "answer": "just text"}',
]


def test_bad_records_go_to_dead_letters_and_nothing_is_lost(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(BAD_LINES) + b"\n")
    # most of these records are bad on purpose: the stage must not stop at max_dead_fraction here
    params = _params(tmp_path, max_dead_fraction=1.0,
                     prompts={"source": "jsonl", "path": str(src), "task": "gsm8k", "max_prompt_chars": 200,
                              "num_shards": 1})
    out, metrics = _run(tmp_path, params)
    acc = metrics["accounting"]
    assert acc["n_in"] == len(BAD_LINES)
    assert acc["balanced"] and acc["n_in"] == acc["n_out"] + acc["n_dropped"] + acc["n_dead"]
    assert acc["dropped"] == {"blank_line": 1}
    assert acc["dead"] == {"invalid_json": 1, "not_an_object": 1, "missing_field": 1, "wrong_type": 2,
                           "empty_text": 1, "too_long": 1, "invalid_utf8": 1, "duplicate_id": 1, "bad_answer": 1}
    good = read_records(str(out / "prompts"))
    # a reference with no final-answer line is a dead letter, never the whole text stored as the answer
    assert sorted(r["question"] for r in good) == ["What is 2+2?", "What is 3+3?"]
    by_q = {r["question"]: r for r in good}
    assert by_q["What is 2+2?"]["reference_answer"] == "4" and by_q["What is 2+2?"]["source"] == "in.jsonl:1"
    assert metrics["without_reference"] == 0
    assert json.loads(by_q["What is 3+3?"]["metadata"]) == {"source_note": "kept as metadata"}
    dead = {d["record_id"]: d for d in read_records(str(out / "dead"))}
    assert dead["in.jsonl:3"]["error_type"] == "invalid_json" and dead["in.jsonl:3"]["raw_input"] == "{not json"
    assert "field 'question' is missing" in dead["in.jsonl:5"]["message"]
    assert "field 'question' must be a string, got int" in dead["in.jsonl:6"]["message"]
    assert "in.jsonl:9" in dead["in.jsonl:9"]["message"] and dead["in.jsonl:9"]["error_type"] == "invalid_utf8"
    assert "already used by in.jsonl:1" in dead["in.jsonl:10"]["message"]
    assert "field 'answer' must be a string, got list" in dead["in.jsonl:12"]["message"]
    assert dead["in.jsonl:13"]["error_type"] == "bad_answer" and "in.jsonl:13: field 'answer'" in dead["in.jsonl:13"]["message"]
    # the staging folders are gone once committed
    assert not Path(staging_path(str(out / "prompts"))).exists()


def test_gsm8k_file_source(tmp_path, gsm8k_dir):
    params = _params(tmp_path, prompts={"source": "jsonl", "path": str(gsm8k_dir / "test.jsonl"),
                                        "task": "gsm8k", "test_fraction": 0.5})
    out, metrics = _run(tmp_path, params)
    acc = metrics["accounting"]
    assert acc["n_in"] == 1319 and acc["balanced"]
    recs = read_records(str(out / "prompts"))
    assert all(r["reference_answer"] and r["prompt"].startswith("Question: ") for r in recs)
    assert 0.4 < metrics["splits"]["test"] / len(recs) < 0.6


def test_arith_prompts_are_byte_identical_with_one_or_two_workers(tmp_path):
    runs = []
    for workers in (1, 2):
        params = _params(tmp_path, beam={"direct_num_workers": workers}, prompts={"n_prompts": 1500})
        out, metrics = _run(tmp_path, params, f"w{workers}")
        assert metrics["accounting"]["n_in"] == 1500 and metrics["accounting"]["balanced"]
        runs.append([Path(f).read_bytes() for f in dataset_files(str(out / "prompts"))])
    assert runs[0] == runs[1] and len(runs[0]) == 2
    recs = read_records(str(tmp_path / "w1" / "prompts"))
    assert len({r["prompt_id"] for r in recs}) == len(recs)
    assert {r["split"] for r in recs} == {"train", "validation", "test"}


def test_arith_word_problems_in_a_real_chat_template(tmp_path, smollm2):
    """`arith.wording: words` on SmolLM2's chat template: the story is the user turn, and every stage
    that reads the problem back from the record (verifier, critiques, MC labels) gets it exactly."""
    from prefsynth.tasks import arith

    params = _params(tmp_path, arith={"min_ops": 1, "max_ops": 2, "operand_max": 30, "operators": "+-", "wording": "words"},
                     prompts={"n_prompts": 200}, prompting={"format": "chat", "tokenizer": smollm2})
    out, metrics = _run(tmp_path, params)
    assert metrics["accounting"]["balanced"] and metrics["prompt_format"] == "chat"
    recs = read_records(str(out / "prompts"))
    task = arith.ArithTask()
    for rec in recs:
        assert rec["question"].endswith("have now?") and "=?" not in rec["prompt"]
        assert rec["messages"][-1]["content"].startswith(rec["question"] + "\n")
        assert "<|im_start|>user\n" + rec["question"] in rec["prompt"]  # SmolLM2's template
        problem = task.problem(rec)
        assert problem.wording == "words" and str(problem.answer) == rec["reference_answer"]
        assert task.verify_steps(rec, task.split_steps(rec["reference_solution"])).answer_correct


def test_split_is_stable_when_the_prompt_set_grows(tmp_path):
    small, _ = _run(tmp_path, _params(tmp_path, prompts={"n_prompts": 300}), "small")
    big, _ = _run(tmp_path, _params(tmp_path, prompts={"n_prompts": 600}), "big")
    split_small = {r["prompt_id"]: r["split"] for r in read_records(str(small / "prompts"))}
    split_big = {r["prompt_id"]: r["split"] for r in read_records(str(big / "prompts"))}
    assert all(split_big[k] == v for k, v in split_small.items())


def test_unbalanced_books_fail_loudly():
    acc = Account(stage="x", n_in=10, n_out=7, dropped={"dup": 1}, dead={"bad": 1})
    with pytest.raises(AccountingError, match="records were lost"):
        acc.check()


def test_unknown_param_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['n_promts'\] in 'prompts'"):
        load_params(_params(tmp_path, prompts={"n_promts": 3}))


def test_empty_file_and_huge_record(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(StageGuardError, match="its input is empty"):  # by default an empty input fails
        _run(tmp_path, _params(tmp_path, prompts={"source": "jsonl", "path": str(empty), "task": "gsm8k"}), "empty")
    out, metrics = _run(tmp_path, _params(tmp_path, max_dead_fraction=1.0,
                                          prompts={"source": "jsonl", "path": str(empty), "task": "gsm8k"}), "empty")
    acc = metrics["accounting"]
    assert acc["n_in"] == 0 and acc["n_out"] == 0 and acc["balanced"]
    assert read_records(str(out / "prompts")) == []

    huge = tmp_path / "huge.jsonl"
    huge.write_text(json.dumps({"question": "y" * 3_000_000, "answer": "#### 1"}) + "\n" +
                    json.dumps({"question": "small", "answer": "#### 2"}) + "\n")
    out, metrics = _run(tmp_path, _params(tmp_path, prompts={"source": "jsonl", "path": str(huge), "task": "gsm8k"}),
                        "huge")
    assert metrics["accounting"]["dead"] == {"too_long": 1} and metrics["accounting"]["n_out"] == 1
    (dead,) = read_records(str(out / "dead"))
    assert "huge.jsonl:1" in dead["message"] and "3000000 chars" in dead["message"]
    assert len(dead["raw_input"]) < 25_000  # the raw record is kept, clipped


def test_extra_train_prompts_leave_the_held_out_prompts_and_policy_0_as_they_are(tmp_path):
    """prompts.extra_train_prompts: more train prompts from a stream of their own; validation and test
    records are byte-for-byte the same (policy-0 is trained excluding exactly them, and measured on
    them), no extra problem copies a held-out one, and the stage's books balance with the copies dropped."""
    from prefsynth.pipelines.bootstrap import sft_examples

    base, m0 = _run(tmp_path, _params(tmp_path, arith={"max_ops": 2, "operand_max": 5}, prompts={"n_prompts": 400}), "base")
    more, m1 = _run(tmp_path, _params(tmp_path, arith={"max_ops": 2, "operand_max": 5},
                                      prompts={"n_prompts": 400, "extra_train_prompts": 600}), "more")
    a, b = read_records(str(base / "prompts")), read_records(str(more / "prompts"))
    held = lambda recs: sorted((r for r in recs if r["split"] != "train"), key=lambda r: r["prompt_id"])
    assert held(a) == held(b) and len(held(a)) > 50
    extra = [r for r in b if r["source"].startswith("arith-extra:")]
    assert extra and all(r["split"] == "train" for r in extra)
    assert not {r["question"] for r in extra} & {r["question"] for r in held(a)}
    assert {r["prompt_id"] for r in a} < {r["prompt_id"] for r in b}
    acc = m1["accounting"]
    # a small world: many of the 1000 problems are copies (of the main stream or of each other)
    assert acc["n_in"] == 1000 and acc["balanced"] and acc["n_dropped"] > 0 and acc["n_out"] == len(b)
    # policy-0's training examples depend on the held-out questions only: the same with or without
    params = load_params(_params(tmp_path, arith={"max_ops": 2, "operand_max": 5}))
    exclude = lambda recs: {r["question"] for r in held(recs)}
    assert sft_examples(params, exclude(a), 300) == sft_examples(params, exclude(b), 300)
    with pytest.raises(ValueError, match="extra_train_prompts"):
        load_params(_params(tmp_path, prompts={"source": "jsonl", "path": "x.jsonl", "extra_train_prompts": 5}))


def test_extra_heldout_prompts_widen_test_and_validation_and_leave_the_train_prompts_as_they_are(tmp_path):
    """prompts.extra_heldout_prompts: more held-out prompts from a stream of their own, split between test
    and validation in the ratio of the fractions; train records are byte-for-byte the same, the main
    stream's held-out records too, and no held-out problem copies a train one."""
    small = {"max_ops": 2, "operand_max": 5}
    base, _ = _run(tmp_path, _params(tmp_path, arith=small, prompts={"n_prompts": 400}), "base")
    more, m1 = _run(tmp_path, _params(tmp_path, arith=small, prompts={"n_prompts": 400, "extra_train_prompts": 300,
                                                                      "extra_heldout_prompts": 600}), "more")
    a, b = read_records(str(base / "prompts")), read_records(str(more / "prompts"))
    main = lambda recs, split: sorted((r for r in recs if r["split"] == split and r["source"].startswith("arith:")),
                                      key=lambda r: r["prompt_id"])
    for split in ("train", "test", "validation"):
        assert main(a, split) == main(b, split)
    extra = [r for r in b if r["source"].startswith("arith-heldout:")]
    splits = collections.Counter(r["split"] for r in extra)
    assert set(splits) == {"test", "validation"} and splits["test"] > splits["validation"]  # 0.2 : 0.1
    assert not {r["question"] for r in b if r["split"] == "train"} & {r["question"] for r in extra}
    assert len({r["prompt_id"] for r in b}) == len(b)
    acc = m1["accounting"]
    assert acc["n_in"] == 1300 and acc["balanced"] and acc["n_dropped"] > 0 and acc["n_out"] == len(b)
    with pytest.raises(ValueError, match="extra_heldout_prompts"):
        load_params(_params(tmp_path, prompts={"source": "jsonl", "path": "x.jsonl", "extra_heldout_prompts": 5}))
    with pytest.raises(ValueError, match="extra_heldout_prompts"):
        load_params(_params(tmp_path, prompts={"extra_heldout_prompts": 5, "test_fraction": 0,
                                               "validation_fraction": 0}))
