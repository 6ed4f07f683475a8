"""Critiques: the exact rule critic, strict verdict parsing, critique accuracy, critique pairs,
a tiny critic trained with TRL, and the critiques stage with accounting and dead letters."""

import json
import random

import pytest

from prefsynth.tasks import arith
from prefsynth.transforms.critiques import (
    UNPARSEABLE,
    CritiqueParseError,
    critique_accuracy,
    critique_pairs,
    load_template,
    model_critique,
    parse_verdict,
    render_critic_prompt,
    rule_critique,
)

PROBLEM = arith.parse_expression("Q: (20-3-8)*4=?")
PROMPT = {"prompt_id": "p1", "split": "train", "task": "arith", "prompt": "Q: (20-3-8)*4=?\n",
          "reference_answer": "36"}


def _resp(rid, steps, prompt_id="p1"):
    return {"response_id": rid, "prompt_id": prompt_id, "steps": steps, "text": "\n".join(steps) + "\n"}


@pytest.mark.parametrize("steps, first_wrong, says", [
    (["20-3=17", "17-8=9", "9*4=36", "A: 36"], None, "All 4 steps are correct."),
    (["20-3=17", "17-8=11", "11*4=44", "A: 44"], 1, "Step 2 is wrong: 17-8 is 9, not 11."),
    (["20-3=17", "17-8=9", "9*4=36", "A: 35"], 3, "Step 4 is wrong: the answer is 36, not 35."),
    (["21-3=18", "18-8=10", "10*4=40", "A: 40"], 0, "it starts from 21, but the problem starts with 20"),
    (["20-3=17", "17-9=8", "8*4=32", "A: 32"], 1, "the problem applies -8 here, not -9"),
    (["20-3=17"], 1, "Step 2 is missing"),
    (["20-3=17", "17-8=9", "9*4=36", "A: 36", "A: 36"], 4, "Step 5 is extra"),
    (["20-3=17", "hello"], 1, "hello is not a calculation"),
])
def test_rule_critique_names_the_first_wrong_step_and_the_verdict_parses_back(steps, first_wrong, says):
    text, located = arith.critique(PROBLEM, steps)
    assert located == first_wrong == arith.verify_solution(PROBLEM, steps).first_wrong_step
    assert says in text
    assert text.rstrip("\n").split("\n")[-1] == ("Verdict: correct" if first_wrong is None
                                                 else f"Verdict: step {first_wrong + 1}")
    assert parse_verdict(text, len(steps)) == first_wrong  # round trip


@pytest.mark.parametrize("garbage", [
    "", "   \n", "Verdict: step 0\n", "Verdict: Step 2\n", "Verdict: correct.\n", "verdict: correct\n",
    "Verdict: step 2\nmore text after\n", "Verdict: step 1\nVerdict: correct\n", "Verdict: step 9\n",
    "Step 2 is wrong: 17-8 is 9, not 11.\n", "Verdict: step two\n", "Verdict: step 2 or 3\n", None,
])
def test_verdict_parsing_is_strict(garbage):
    with pytest.raises(CritiqueParseError):
        parse_verdict(garbage, n_steps=4)


def test_verdict_may_name_the_missing_step_right_after_the_last():
    assert parse_verdict("Step 2 is missing.\nVerdict: step 2\n", n_steps=1) == 1
    with pytest.raises(CritiqueParseError):
        parse_verdict("Verdict: step 3\n", n_steps=1)


def test_rule_critic_is_exact_on_planted_errors_and_accuracy_catches_a_wrong_location():
    cfg = arith.ArithConfig()
    problems = arith.generate_problems(cfg, 7, "test-critique", 0, 300)
    pairs = []
    for i, problem in enumerate(problems):
        rng = random.Random(i)
        planted = rng.random() < 0.5
        steps, k = arith.planted_error_steps(problem, rng) if planted else (problem.solution_steps, None)
        text, _ = arith.critique(problem, steps)
        pairs.append((parse_verdict(text, len(steps)), k))
    acc = critique_accuracy(pairs)
    assert acc["located_accuracy"] == 1.0 and acc["verdict_accuracy"] == 1.0
    assert acc["n_truly_wrong"] > 100 and acc["n_truly_correct"] > 100
    # a critic off by one step on wrong solutions: verdicts still agree, locations do not
    shifted = [(t + 1 if t is not None else None, t) for _, t in pairs]
    bad = critique_accuracy(shifted)
    assert bad["truly_wrong"]["located_accuracy"] == 0.0 and bad["truly_wrong"]["verdict_accuracy"] == 1.0
    assert bad["truly_correct"]["located_accuracy"] == 1.0
    assert bad["located_accuracy"] == pytest.approx(acc["n_truly_correct"] / acc["n"], abs=1e-4)
    # unparseable predictions are wrong under both measures, even on a wrong solution
    assert critique_accuracy([(UNPARSEABLE, 1), (UNPARSEABLE, None)])["verdict_accuracy"] == 0.0


def test_template_rendering_and_a_garbage_model_output_is_rejected():
    template = load_template()
    steps = ["20-3=17", "17-8=11", "11*4=44", "A: 44"]
    prompt = render_critic_prompt(template, PROMPT["prompt"], steps)
    assert "Q: (20-3-8)*4=?\n1. 20-3=17\n2. 17-8=11\n3. 11*4=44\n4. A: 44\nCritique:\n" in prompt
    row = model_critique(_resp("r1", steps), PROMPT, "critic", prompt, "Step 3 is wrong.\nVerdict: step 3")
    assert row["predicted_first_wrong_step"] == 2 and row["true_first_wrong_step"] == 1
    assert row["located_correctly"] is False and row["raw_output"] == "Step 3 is wrong.\nVerdict: step 3"
    with pytest.raises(CritiqueParseError):
        model_critique(_resp("r1", steps), PROMPT, "critic", prompt, "11*4=44\nA: 44\nOK? yes")


def test_critique_pairs_on_a_hand_case():
    template = load_template()
    wrong = _resp("r1", ["20-3=17", "17-8=11", "11*4=44", "A: 44"])
    wrong2 = _resp("r2", ["20-3=17", "17-8=9", "9*4=36", "A: 35"])
    right = _resp("r3", ["20-3=17", "17-8=9", "9*4=36", "A: 36"])
    rules = [rule_critique(r, PROMPT, template) for r in (wrong, wrong2, right)]
    cp = render_critic_prompt(template, PROMPT["prompt"], wrong["steps"])
    model_bad = model_critique(wrong, PROMPT, "m", cp, "Step 3 is wrong: 11*4 is 45, not 44.\nVerdict: step 3\n")
    model_good = model_critique(wrong, PROMPT, "m2", cp, rules[0]["critique"])  # agrees with the rule
    unknown = dict(rules[2], response_id="r4", truth_known=False, located_correctly=None)
    pairs = critique_pairs(rules + [model_bad, model_good, unknown, model_bad], seed=3)
    by = {(p["chosen_id"], p["label_source"]): p for p in pairs}
    assert len(pairs) == 3  # r1: model critic wrong; r2, r3: corrupted verdicts; r4: no truth; duplicate dropped
    p1 = by[(rules[0]["critique_id"], "model_critic_wrong")]
    assert p1["chosen"] == "Step 2 is wrong: 17-8 is 9, not 11.\nVerdict: step 2\n"
    assert p1["rejected"] == model_bad["critique"] and p1["rejected_id"] == model_bad["critique_id"]
    assert p1["level"] == "critique" and p1["prompt"] == cp and "located step 3, truth step 2" in p1["kept_reason"]
    p2 = by[(rules[1]["critique_id"], "rule_corrupted_verdict")]
    assert p2["rejected"].endswith("Verdict: correct\n") and p2["rejected_id"] is None
    p3 = by[(rules[2]["critique_id"], "rule_corrupted_verdict")]
    assert p3["chosen"].endswith("Verdict: correct\n")
    claimed = parse_verdict(p3["rejected"], 4)
    assert claimed is not None  # blames a step of a right solution, with a false claim
    a, op, b, c = PROBLEM.steps[claimed]
    assert f"{a}{op}{b} is {c} " not in p3["rejected"]
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    assert critique_pairs(rules + [model_bad], seed=3) == critique_pairs(list(reversed(rules + [model_bad])), seed=3)


def _prompt_records(n):
    recs = []
    for i, problem in enumerate(arith.generate_problems(arith.ArithConfig(), 5, "test-critiques", 0, n)):
        recs.append({"prompt_id": f"p{i:03d}", "split": "validation" if i % 4 == 0 else "train", "task": "arith",
                     "prompt": problem.prompt, "messages": None, "question": problem.expression,
                     "reference_answer": str(problem.answer), "reference_solution": problem.solution,
                     "source": "test", "metadata": "{}"})
    return recs


def _response_records(prompts):
    out = []
    for i, p in enumerate(prompts):
        problem = arith.parse_expression(p["prompt"])
        for j in range(2):
            steps = problem.solution_steps if j == 0 else arith.planted_error_steps(problem, random.Random(i))[0]
            text = "\n".join(steps) + "\n"
            out.append({"response_id": f"r{i:03d}{j}", "prompt_id": p["prompt_id"], "policy": "t", "iteration": 0,
                        "sample_index": j, "text": text, "steps": steps, "final_answer": arith.extract_answer(text),
                        "n_tokens": len(text), "sum_logprob": -1.0, "mean_logprob": -0.1, "self_certainty": 1.0,
                        "finish_reason": "stop", "truncated_prompt": False, "source": "test"})
    return out


def _write(path, records, dataset):
    from prefsynth.schemas.io import records_to_table, shard_name, write_table

    path.mkdir(parents=True)
    write_table(records_to_table(records, dataset, "test"), str(path / shard_name(0, 1)))
    return str(path)


def _params(tmp_path, **critic):
    import yaml

    data = {"critic": {"max_steps": 3, "batch_size": 4, "warmup_steps": 1, "n_layer": 1, "n_embd": 32,
                       "eval_examples": 6, **critic},
            "critiques": {"max_new_tokens": 24, "responses_per_batch": 8, "num_shards": 1}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.slow
def test_critic_stage_trains_a_loadable_tiny_critic(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefsynth.pipelines import critic

    prompts = _prompt_records(24)
    responses = _response_records(prompts)
    pdir, rdir = _write(tmp_path / "prompts", prompts, "prompts"), _write(tmp_path / "responses", responses, "responses")
    out, metrics = tmp_path / "critic", tmp_path / "critic.json"
    critic.main(["--params", _params(tmp_path), "--prompts", pdir, "--responses", rdir, "--out", str(out),
                 "--metrics", str(metrics)])
    m = json.loads(metrics.read_text())
    assert m["train_steps"] == 3 and m["train_examples"] == 12
    # held out by prompt: no held-out prompt's response was trained on
    assert m["heldout"]["responses"]["n"] + m["heldout"]["planted"]["n"] == m["heldout"]["all"]["n"] == 6
    assert m["heldout"]["planted"]["n"] >= 3
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    text = "Step 2 is wrong: 17-8 is 9, not 11.\nVerdict: step 2\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids and tok.decode(ids) == text
    assert model.config.n_positions == 320


def test_critic_warm_start_copies_the_policy_and_grows_its_tables(tmp_path):
    import torch

    from prefsynth.pipelines.critic import build_critic_tokenizer, warm_start
    from prefsynth.tiny_policy import build_model, build_tokenizer

    torch.manual_seed(0)
    policy_tok = build_tokenizer()
    policy = build_model(policy_tok, 1, 32, 2, 16)
    policy.save_pretrained(tmp_path / "policy-0")
    critic = build_model(build_critic_tokenizer(), 1, 32, 2, 40)
    before = {k: v.clone() for k, v in critic.state_dict().items()}
    info = warm_start(critic, str(tmp_path / "policy-0"))
    assert info["tables_grown"] >= 2 and info["tensors_copied"] > 4
    theirs, ours = policy.state_dict(), critic.state_dict()
    n_vocab = len(policy_tok)
    assert torch.equal(ours["transformer.h.0.attn.c_attn.weight"], theirs["transformer.h.0.attn.c_attn.weight"])
    assert torch.equal(ours["transformer.wte.weight"][:n_vocab], theirs["transformer.wte.weight"])
    assert torch.equal(ours["transformer.wpe.weight"][:16], theirs["transformer.wpe.weight"])
    # the critic's own characters and its positions past the policy's keep their random init
    assert torch.equal(ours["transformer.wte.weight"][n_vocab:], before["transformer.wte.weight"][n_vocab:])
    assert torch.equal(ours["transformer.wpe.weight"][16:], before["transformer.wpe.weight"][16:])
    with pytest.raises(ValueError, match="n_layer/n_embd/n_head"):
        warm_start(build_model(build_critic_tokenizer(), 2, 32, 2, 40), str(tmp_path / "policy-0"))


def test_training_examples_hold_out_by_prompt():
    from prefsynth.config import load_params
    from prefsynth.pipelines.critic import build_examples
    from prefsynth.transforms.critiques import critic_holdout

    params = load_params(None, {"critic.max_steps": 5, "critic.batch_size": 8, "critic.heldout_fraction": 0.3})
    prompts = _prompt_records(40)
    responses = _response_records(prompts)
    examples, heldout, stats = build_examples(params, prompts, responses, load_template(), lambda p, c: True)
    held = [p for p in prompts if critic_holdout(params.seed, p, 0.3)]
    assert held and len(held) < len(prompts)
    for p in held:  # a held-out problem never appears in a training example
        assert not any(p["prompt"].strip() + "\n" in x for x in examples["prompt"])
    assert stats["train_examples"] == 40 and len(examples["completion"]) == 40
    assert abs(stats["train_correct_fraction"] - 0.5) <= 0.05
    assert {h["source"] for h in heldout} == {"responses", "planted"}


@pytest.mark.slow
def test_critiques_stage_accounts_and_sends_garbage_model_critiques_to_dead_letters(tmp_path):
    from helpers import tiny_random_policy

    from prefsynth.pipelines import critiques
    from prefsynth.schemas.io import read_records

    prompts = _prompt_records(6)
    prompts[5]["reference_answer"] = None  # no ground truth: the rule critic drops it, counted
    refs = {p["prompt_id"]: p["reference_answer"] for p in prompts}
    responses = _response_records(prompts)
    pdir, rdir = _write(tmp_path / "prompts", prompts, "prompts"), _write(tmp_path / "responses", responses, "responses")
    garbage_critic = tiny_random_policy(tmp_path / "critic", n_positions=320)  # untrained: no verdict lines
    params = _params(tmp_path)
    params_text = (tmp_path / "params.yaml").read_text().replace("num_shards: 1", "num_shards: 1\n  model_max_responses: 10")
    (tmp_path / "params.yaml").write_text(params_text)
    out, dead, metrics = tmp_path / "critiques", tmp_path / "dead", tmp_path / "m.json"
    # the confidence critic: an untrained policy wrote nothing here, but it scores all the same
    policy = tiny_random_policy(tmp_path / "policy", n_positions=96)
    critiques.main(["--params", params, "--prompts", pdir, "--responses", rdir, "--critic", garbage_critic,
                    "--policy", policy,
                    "--out", str(out), "--dead", str(dead), "--metrics", str(metrics), "--reports", str(tmp_path / "r")])
    m = json.loads(metrics.read_text())
    acc = m["accounting"]
    assert acc["n_in"] == 3 * len(responses) == 36 and acc["balanced"]
    assert acc["dropped"] == {"rule_no_ground_truth": 2, "model_beyond_max_responses": 2}
    conf = [r for r in read_records(str(out)) if r["critic"] == "confidence"]
    assert len(conf) == 12 and all(r["critic_model"] == policy for r in conf)
    # the reference decides right vs wrong: a right answer is `correct`, a wrong one gets a located step
    for r in (r for r in conf if refs[r["prompt_id"]] is not None):
        wrong = r["steps"][-1] != f"A: {refs[r['prompt_id']]}"
        assert (r["predicted_first_wrong_step"] is not None) == wrong and r["critique"].endswith(
            "Verdict: correct\n" if not wrong else f"Verdict: step {r['predicted_first_wrong_step'] + 1}\n")
    assert m["accuracy"]["confidence"]["n"] == 10  # the prompt without a reference has no truth
    rows = read_records(str(out))
    dead_rows = read_records(str(dead))
    rule = [r for r in rows if r["critic"] == "rule"]
    assert len(rule) == 10 and all(r["located_correctly"] for r in rule)
    assert m["accuracy"]["rule"]["located_accuracy"] == 1.0
    model_rows = [r for r in rows if r["critic"] == "model"]
    assert len(model_rows) + len(dead_rows) == 10 and acc["n_out"] == len(rows)
    assert dead_rows and all(d["error_type"] == "unparseable_critique" and d["stage"] == "critiques"
                             for d in dead_rows)
    assert all("Critique:" in d["raw_input"] and d["raw_output"] is not None for d in dead_rows)
    assert {d["record_id"] for d in dead_rows} <= {r["response_id"] for r in responses}


def test_score_mode_verdicts_keep_a_critique_whose_verdict_would_not_fit(tmp_path):
    """`critiques.verdict: score` scores every verdict option after the critic's reasoning; where the
    longest option would run past the critic's context the critique is kept as generated (parsed
    strictly later) instead of failing the batch in `score`."""
    from prefsynth.backends.transformers_backend import TransformersBackend
    from prefsynth.transforms.critiques import CRITIQUE_VERDICT, scored_verdicts

    from helpers import tiny_random_policy

    backend = TransformersBackend(tiny_random_policy(tmp_path / "c", n_positions=40), batch_size=8)
    short_prompt, long_prompt = "Q: 1+2=?\n1. 1+2=3\n", "Q: 1+2+3+4=?\n1. 1+2=3\n2. 3+3=6\n3. 6+4=11\n"
    texts = ["1+2 is 3.\nVerdict: correct\n", "ok.\nVerdict: step 3\n", None]
    out = scored_verdicts(backend, [short_prompt, long_prompt, short_prompt], texts, [1, 3, 1])
    assert out[0].startswith("1+2 is 3.\n" + CRITIQUE_VERDICT)  # scored: one of the allowed verdicts
    assert out[0].split(CRITIQUE_VERDICT)[1].strip() in ("correct", "step 1", "step 2")
    assert out[1] == texts[1] and out[2] is None  # did not fit: as generated; a failure passes through


def test_confidence_critic_on_smollm2_locates_the_slip_and_redoes_it(smollm2):
    """A real BPE model as the confidence critic (no critic model): with the reference, a right answer is
    `correct`; a wrong one is located at the step whose result the model finds least likely, and the
    critique shows the model's own redo of that step."""
    from prefsynth.backends.transformers_backend import TransformersBackend
    from prefsynth.config.critiques import ConfidenceCriticConfig
    from prefsynth.transforms.confidence_critic import ConfidenceCritiqueBatch
    from prefsynth.transforms.critiques import parse_verdict

    backend = TransformersBackend(smollm2, device="cpu", batch_size=8)
    prompt = {"prompt_id": "p1", "task": "arith", "prompt": "Q: 7+5-3=?\n", "question": "7+5-3",
              "reference_answer": "9", "split": "test"}
    cases = {"right": ["7+5=12", "12-3=9", "A: 9"], "first": ["7+5=13", "13-3=10", "A: 10"],
             "second": ["7+5=12", "12-3=7", "A: 7"]}
    batch = [({"response_id": k, "prompt_id": "p1", "steps": s, "text": "\n".join(s) + "\n"}, prompt)
             for k, s in cases.items()]
    critic = ConfidenceCritiqueBatch(None, smollm2, ConfidenceCriticConfig(span="result"), seed=0)
    got = {pair[0]["response_id"]: res.inference for pair, res in zip(batch, critic(batch, backend))}
    assert got["right"][1] is None and got["right"][0].endswith("Verdict: correct\n")
    assert got["first"][1] == 0 and got["second"][1] == 1, got
    for text, located in got.values():
        assert parse_verdict(text, 3) == located
    assert "Redone from the steps before it, the model writes" in got["second"][0], got["second"][0]
