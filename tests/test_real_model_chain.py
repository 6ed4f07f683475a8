"""The whole chain on a real pretrained model: SmolLM2-135M-Instruct (BPE tokenizer, chat template)
on GSM8K prompts from ../shared/data/gsm8k, through a real `dvc repro` of the project with the
examples/gsm8k-smollm2 profile made small: prompts -> generate -> mcts -> label (verifier, P(True),
pointwise, pairwise both orders, TICK) -> critiques (SmolLM2 as the critic) -> candidates -> pairs ->
train (TRL DPO with LoRA, a few steps) -> evaluate -> card. Asserts what broke before: trees deeper
than one step, non-degenerate judge scores, parsed judge outputs, conversational pairs that TRL
accepts with the real template, the books balanced in every stage."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prefsynth.schemas.io import read_records

pytestmark = pytest.mark.slow

IGNORE = shutil.ignore_patterns(".venv", ".git", "data", "models", "metrics", "plots", "reports", "card",
                                "__pycache__", "*.egg-info", ".pytest_cache", "tmp", "cache", ".dvc/cache",
                                ".dvc/tmp")
# shrink the example profile to minutes on 2 cores
SMALL = {
    "generate": {"max_prompts": 4, "n": 4, "max_new_tokens": 96},
    "mcts": {"max_prompts": 2, "trees_per_batch": 2,
             "search": {"iterations": 4, "breadth": 2, "max_depth": 4, "max_step_tokens": 40}},
    "label": {"mc_max_responses": 2, "responses_per_batch": 4, "methods": ["binary"],
              "mc": {"rollouts": 2, "max_new_tokens": 48},
              "judge": {"p_true_max_responses": 8, "step_confidence_max_responses": 8, "pointwise_max_responses": 4,
                        "pairwise_max_pairs": 4, "tick_max_prompts": 1, "tick_max_questions": 3, "max_new_tokens": 48,
                        "items_per_batch": 16}},
    "critiques": {"model_max_responses": 4, "max_new_tokens": 64, "confidence_critic": {"max_responses": 4}},
    "pairs": {"upo": {"passes": 2, "head_steps": 20, "max_length": 256}},
    "train": {"max_steps": 2, "batch_size": 2, "max_length": 384},
    "evaluate": {"max_prompts": 2, "k": 2, "max_new_tokens": 96},
}


def _dvc(cwd: Path, *args: str) -> str:
    dvc = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(dvc), *args], cwd=cwd, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


def test_smollm2_gsm8k_chain_end_to_end(tmp_path, repo, smollm2, gsm8k_dir):
    project = tmp_path / "project"
    shutil.copytree(repo, project, ignore=IGNORE)
    # 4 train + 2 test GSM8K problems (the split comes from the file, as a user's own split would)
    lines = (gsm8k_dir / "test.jsonl").read_text().splitlines()[:6]
    src = tmp_path / "gsm8k-six.jsonl"
    src.write_text("".join(json.dumps({**json.loads(l), "split": "train" if i < 4 else "test"}) + "\n"
                           for i, l in enumerate(lines)))
    from prefsynth.profile import apply_profile, merge

    params = merge(apply_profile(repo / "examples/gsm8k-smollm2/params.yaml", repo / "params.yaml"), SMALL)
    params["prompts"].update({"path": str(src), "split_field": "split"})
    params["bootstrap"]["model"] = smollm2
    params["critiques"]["model_critic"]["model"] = smollm2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)

    out = _dvc(project, "repro")
    for stage in ("prompts", "bootstrap", "critic", "generate@1", "mcts@1", "label@1", "critiques@1", "candidates@1",
                  "pairs@1", "train@1", "evaluate@1", "card"):
        assert f"Running stage '{stage}'" in out, stage
    check_chain(project, smollm2)


def check_chain(project: Path, smollm2: str) -> None:
    """What the run must show (a function of the project folder, so a kept run can be re-checked)."""
    m = lambda name: json.loads((project / "metrics" / name).read_text())  # noqa: E731

    # prompts rendered once, with the real chat template; references parsed from '#### n'
    prompts = read_records(str(project / "data/prompts"))
    assert m("prompts.json")["prompt_format"] == "chat" and len(prompts) == 6
    assert all(p["prompt"].startswith("<|im_start|>system") and p["prompt"].endswith("<|im_start|>assistant\n")
               for p in prompts)
    assert all(p["reference_answer"].lstrip("-").replace(".", "").isdigit() for p in prompts)
    assert m("critic.json")["skipped"]  # the tiny arith critic skips cleanly

    # books balanced in every Beam stage
    for name in ("prompts.json", "round-1/generate.json", "round-1/mcts.json", "round-1/labels.json",
                 "round-1/critiques.json", "round-1/candidates.json", "round-1/pairs.json"):
        acc = m(name)["accounting"]
        assert acc["balanced"] and acc["n_in"] == acc["n_out"] + acc["n_dropped"] + acc["n_dead"], (name, acc)

    # MCTS trees grow past the first step (the "\n\n" collapse is fixed)
    nodes = read_records(str(project / "data/round-1/trees"))
    assert max(n["depth"] for n in nodes) >= 2, sorted({n["depth"] for n in nodes})

    # judges: every configured judge produced labels, scores are not degenerate
    labels = read_records(str(project / "data/round-1/labels"))
    by_labeler: dict = {}
    for row in labels:
        by_labeler.setdefault(row["labeler"], []).append(row)
    for name in ("verifier_gsm8k", "p_true", "step_confidence", "judge_pointwise", "judge_pairwise", "judge_tick",
                 "mc_binary"):
        assert by_labeler.get(name), (name, sorted(by_labeler))
    # step confidence on SmolLM2's BPE steps after its chat-template prompt: a probability per step, the
    # running minimum never rising along a response, the response label that minimum
    conf: dict = {}
    for r in by_labeler["step_confidence"]:
        conf.setdefault(r["target_id"], {})[r["step_index"]] = r["score"]
    assert len({round(s, 6) for c in conf.values() for s in c.values()}) > 1
    for c in conf.values():
        steps = [c[i] for i in sorted(k for k in c if k is not None)]
        assert all(0.0 < s <= 1.0 for s in steps) and steps == sorted(steps, reverse=True)
        assert c[None] == pytest.approx(steps[-1])
    pair_rows = by_labeler["judge_pairwise"]
    p_a = [r["score"] for r in pair_rows]
    assert all(0.0 < p < 1.0 for p in p_a) and len({round(p, 6) for p in p_a}) > 1, p_a
    pair_quality = m("round-1/labels.json")["quality"]["judge_pairwise"]["pair"]
    assert pair_quality["n_judged"] == len(pair_rows) and 0.0 <= pair_quality["position_inconsistency_rate"] <= 1.0
    assert all(r["rationale"].startswith("a first -> ") for r in pair_rows)  # both orders were judged
    assert len({round(r["score"], 6) for r in by_labeler["p_true"]}) > 1
    assert {r["label"] for r in by_labeler["judge_pointwise"]} <= {"1", "2", "3", "4", "5"}

    # critiques by SmolLM2 are parsed (rows) or dead letters with the raw text, never lost
    crit = m("round-1/critiques.json")
    assert crit["critic_model"] == smollm2 and crit["accounting"]["n_in"] == 32  # one unit per (response, critic)
    conf = [r for r in read_records(str(project / "data/round-1/critiques")) if r["critic"] == "confidence"]
    dead = read_records(str(project / "data/round-1/deadletter/critiques"))
    assert crit["critiques_by_critic"].get("model", 0) + crit["critiques_by_critic"].get("confidence", 0) \
        + crit["accounting"]["n_dead"] == 4 + 4  # model_max_responses, confidence_critic.max_responses
    # the confidence critic on SmolLM2's GSM8K solutions: the reference decides right vs wrong, a wrong
    # answer gets a located step and the critique says which
    from prefsynth.tasks import get_task

    gsm8k = get_task("gsm8k")
    refs = {r["prompt_id"]: r["reference_answer"] for r in read_records(str(project / "data/prompts"))}
    texts = {r["response_id"]: r["text"] for r in read_records(str(project / "data/round-1/responses"))}
    assert conf or any("confidence critic" in d["message"] for d in dead)
    for r in conf:
        wrong = not gsm8k.answers_match(gsm8k.extract_answer(texts[r["response_id"]]), refs[r["prompt_id"]])
        assert (r["predicted_first_wrong_step"] is not None) == wrong, r["critique"]
        assert r["critic_model"] == smollm2 and r["critique"].rstrip().split("\n")[-1].startswith("Verdict: ")

    # pairs: loadable by datasets, conversational views accepted by TRL with the real template
    import datasets
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational

    views = [v for v in ("response", "step") if read_records(str(project / f"data/round-1/pairs/{v}"))]
    assert views
    tok = AutoTokenizer.from_pretrained(smollm2)
    for view in views:
        conv = datasets.load_dataset("parquet", data_files=str(project / f"data/round-1/pairs/{view}_conversational/*.parquet"),
                                     split="train")
        assert len(conv) > 0 and is_conversational(conv[0])
        rendered = apply_chat_template({k: conv[0][k] for k in ("prompt", "chosen", "rejected")}, tok)
        assert rendered["prompt"].startswith("<|im_start|>system") and rendered["chosen"].strip()

    train = m("round-1/train.json")
    assert train["train_steps"] == 2 and train["pairs"] > 0
    ev = m("round-1/evaluate.json")
    assert ev["policies"]["policy-1"]["n_prompts"] == 2
    assert (project / "card/README.md").exists()
