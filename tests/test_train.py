"""Training: the weighted-DPO subclass on a hand case, step-aware EOS, and a tiny train + evaluate round."""

import json
import random

import datasets
import pytest
import torch

from prefsynth.schemas.io import records_to_table, write_table
from prefsynth.tasks import arith
from prefsynth.transforms.prompt_records import arith_record

PROMPT = "Q: (20-3-8)*4=?\n"
RIGHT = "20-3=17\n17-8=9\n9*4=36\nA: 36\n"
WRONG = "20-3=17\n17-8=8\n8*4=32\nA: 32\n"


def _trainer(tmp_path, rows, loss_type=("sigmoid",), nll_weight=0.0):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    from helpers import tiny_random_policy
    from prefsynth.trainers.weighted_dpo import WeightedDPOTrainer

    policy = tiny_random_policy(tmp_path / "policy", seed=3)
    tok = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy)
    ref = AutoModelForCausalLM.from_pretrained(policy)
    with torch.no_grad():  # a policy that differs from its reference, so the loss is not log 2 everywhere
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), use_cpu=True, bf16=False, report_to=[], save_strategy="no",
                     max_length=96, per_device_train_batch_size=4, loss_type=list(loss_type), beta=0.5,
                     disable_tqdm=True)
    return WeightedDPOTrainer(model=model, ref_model=ref, args=args, train_dataset=datasets.Dataset.from_list(rows),
                              processing_class=tok, nll_weight=nll_weight)


def _loss(trainer, examples):
    trainer.model.eval()
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, trainer.data_collator(examples)))


@pytest.mark.parametrize("loss_type", [("sigmoid",), ("ipo",)])
def test_weighted_dpo_loss_is_the_weighted_mean_of_the_pair_losses(tmp_path, loss_type):
    rows = [{"prompt": PROMPT, "chosen": RIGHT, "rejected": WRONG, "weight": 1.0},
            {"prompt": PROMPT + "20-3=17\n", "chosen": "17-8=9\n", "rejected": "17-8=8\n", "weight": 0.0,
             "ends_chosen": False, "ends_rejected": False},
            {"prompt": "Q: 5+7=?\n", "chosen": "5+7=12\nA: 12\n", "rejected": "5+7=13\nA: 13\n", "weight": 2.0},
            {"prompt": "Q: 9*3=?\n", "chosen": "9*3=27\nA: 27\n", "rejected": "A: 28\n", "weight": 0.5}]
    trainer = _trainer(tmp_path, rows, loss_type)
    data = trainer.train_dataset
    assert "weight" in data.column_names
    single = []
    for i in range(len(rows)):  # each pair alone, weight 1: its own unweighted loss
        ex = dict(data[i])
        ex["weight"] = 1.0
        single.append(_loss(trainer, [ex]))
    weighted = _loss(trainer, [data[i] for i in range(len(rows))])
    expected = sum(w * l for w, l in zip((1.0, 0.0, 2.0, 0.5), single)) / len(rows)
    assert weighted == pytest.approx(expected, rel=1e-4)
    unweighted = _loss(trainer, [{**data[i], "weight": 1.0} for i in range(len(rows))])
    assert unweighted == pytest.approx(sum(single) / len(rows), rel=1e-4)
    assert abs(weighted - unweighted) > 1e-3  # the weights really changed the loss


def test_nll_term_adds_the_pair_weighted_chosen_nll(tmp_path):
    rows = [{"prompt": PROMPT, "chosen": RIGHT, "rejected": WRONG, "weight": 1.0},
            {"prompt": "Q: 5+7=?\n", "chosen": "5+7=12\nA: 12\n", "rejected": "5+7=13\nA: 13\n", "weight": 3.0}]
    plain = _trainer(tmp_path / "a", rows)
    rpo = _trainer(tmp_path / "b", rows, nll_weight=0.5)  # same seeds: the same model
    batch = [rpo.train_dataset[i] for i in range(2)]
    rpo.model.train()  # the NLL term is taken from the policy's grad-enabled pass
    plain.model.train()
    diff = float(rpo.compute_loss(rpo.model, rpo.data_collator(batch))) - \
        float(plain.compute_loss(plain.model, plain.data_collator(batch)))
    nlls = []
    for ex in batch:  # by hand: mean token NLL of prompt -> chosen (+EOS)
        ids = torch.tensor([ex["prompt_ids"] + ex["chosen_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(rpo.model(ids).logits[0, :-1], -1)
        tgt = ids[0, 1:]
        tok = logp[torch.arange(len(tgt)), tgt][len(ex["prompt_ids"]) - 1:]
        nlls.append(float(-tok.mean()))
    assert diff == pytest.approx(0.5 * (1.0 * nlls[0] + 3.0 * nlls[1]) / 4.0, rel=1e-3)


def test_step_pairs_get_no_eos_and_solutions_do():
    from transformers import AutoTokenizer

    from prefsynth.pipelines.train import ends_solution
    from prefsynth.trainers.weighted_dpo import tokenize_pair

    assert ends_solution("17-8=9\n", "step", "arith") is False
    assert ends_solution("9*4=36\nA: 36\n", "step", "arith") is True
    assert ends_solution(RIGHT, "response", "arith") is True


def test_tokenize_pair_marks_eos_only_where_asked(tmp_path):
    from transformers import AutoTokenizer

    from helpers import tiny_random_policy
    from prefsynth.trainers.weighted_dpo import tokenize_pair

    tok = AutoTokenizer.from_pretrained(tiny_random_policy(tmp_path / "p"))
    ex = tokenize_pair({"prompt": PROMPT, "chosen": "20-3=17\n", "rejected": "20-3=18\n",
                        "ends_chosen": False, "ends_rejected": True}, tok)
    assert tok.decode(ex["prompt_ids"]) == PROMPT
    assert ex["chosen_ids"][-1] != tok.eos_token_id and tok.decode(ex["chosen_ids"]) == "20-3=17\n"
    assert ex["rejected_ids"][-1] == tok.eos_token_id


def _write_round_inputs(root, n_train=48, n_test=24, n_val=8):
    """Prompts and pair views of a tiny round: canonical solutions vs planted errors."""
    from prefsynth.tasks.arith import ArithConfig

    cfg = ArithConfig()
    problems = arith.generate_problems(cfg, 7, "test-train", 0, n_train + n_val + n_test)
    prompts, response, step = [], [], []
    for i, prob in enumerate(problems):
        rec = arith_record(prob, "test", 7, 0.0)
        rec["split"] = "train" if i < n_train else "validation" if i < n_train + n_val else "test"
        prompts.append(rec)
        if rec["split"] != "train":
            continue
        steps = arith.split_steps(prob.solution)
        rng = random.Random(i)
        bad = arith.corrupt_step(steps[0], rng)
        common = {"prompt_id": rec["prompt_id"], "chosen_id": None, "rejected_id": None, "chosen_score": 1.0,
                  "rejected_score": 0.0, "margin": 1.0, "uncertainty_mean": None, "uncertainty_var": None,
                  "uncertainty_bald": None, "weight": 1.0, "label_source": "verifier_arith", "kept_reason": "test"}
        response.append({**common, "pair_id": f"r{i}", "level": "response", "prompt": rec["prompt"],
                         "chosen": prob.solution, "rejected": bad + "\nA: 0\n"})
        step.append({**common, "pair_id": f"s{i}", "level": "step", "prompt": rec["prompt"], "chosen": steps[0] + "\n",
                     "rejected": bad + "\n", "weight": 0.5})
    (root / "prompts").mkdir(parents=True)
    write_table(records_to_table(prompts, "prompts", "test"), str(root / "prompts" / "part-0.parquet"))
    for view, rows in (("response", response), ("step", step)):
        (root / "pairs" / view).mkdir(parents=True)
        write_table(records_to_table(rows, "pairs", "test"), str(root / "pairs" / view / "part-0.parquet"))


@pytest.mark.parametrize("trainer,extra", [("dpo", {"loss_type": ["ipo"]}),
                                           ("dpo", {"lora": True, "loss_type": ["sigmoid", "sft"]})])
def test_train_then_evaluate_round(tmp_path, trainer, extra):
    from helpers import tiny_random_policy, write_params
    from prefsynth.backends.transformers_backend import TransformersBackend
    from prefsynth.pipelines import evaluate, train

    _write_round_inputs(tmp_path)
    policy0 = tiny_random_policy(tmp_path / "policy-0", seed=1)
    params = write_params(tmp_path / "params.json", {
        "train": {"trainer": trainer, "max_steps": 3, "batch_size": 8, "learning_rate": 1e-3, **extra},
        "evaluate": {"max_prompts": 16, "k": 2, "max_new_tokens": 24}})
    train.main(["--params", params, "--prompts", str(tmp_path / "prompts"), "--pairs", str(tmp_path / "pairs"),
                "--policy", policy0, "--out", str(tmp_path / "policy-1"), "--metrics", str(tmp_path / "train.json")])
    stats = json.loads((tmp_path / "train.json").read_text())
    assert stats["train_steps"] == 3 and stats["pairs"] == 96
    assert stats["pairs_by_source"] == {"verifier_arith": 96}

    # the new policy is a plain HF model dir: every backend loads it; and training changed it
    b0, b1 = TransformersBackend(policy0, device="cpu"), TransformersBackend(str(tmp_path / "policy-1"), device="cpu")
    s0 = b0.score([PROMPT], [RIGHT])[0]
    s1 = b1.score([PROMPT], [RIGHT])[0]
    assert s0 != pytest.approx(s1, abs=1e-6)

    evaluate.main(["--params", params, "--prompts", str(tmp_path / "prompts"), "--policies", policy0,
                   str(tmp_path / "policy-1"), "--metrics", str(tmp_path / "eval.json"),
                   "--plots", str(tmp_path / "plots" / "accuracy.csv")])
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert set(ev["policies"]) == {"policy-0", "policy-1"}
    p1 = ev["policies"]["policy-1"]
    assert p1["n_prompts"] == 16 and "maj_at_2" in p1
    # an accuracy of 16 prompts is k/16, inside its own Wilson interval, and the paired delta is the plain one
    hits = p1["greedy_accuracy"] * 16
    assert hits == pytest.approx(round(hits))
    lo, hi = p1["ci95"]["greedy_accuracy"]
    assert lo <= p1["greedy_accuracy"] <= hi and hi - lo > 0.1  # 16 prompts: a wide interval
    assert p1["paired_delta_vs_first"]["greedy_accuracy"]["delta"] == pytest.approx(
        p1["delta_vs_first"]["greedy_accuracy"], abs=1e-4)
    # validation: the same numbers on its own prompts, never the test ones
    val = ev["validation"]
    assert val["split"] == "validation" and val["n_prompts"] == 8
    assert set(val["policies"]) == {"policy-0", "policy-1"} and val["policies"]["policy-1"]["n_prompts"] == 8
    assert p1["delta_vs_first"]["greedy_accuracy"] == pytest.approx(
        p1["greedy_accuracy"] - ev["policies"]["policy-0"]["greedy_accuracy"], abs=1e-4)
    lines = (tmp_path / "plots" / "accuracy.csv").read_text().splitlines()
    assert lines[0].startswith("round,policy,greedy_accuracy") and len(lines) == 3
    # the per-prompt outcomes beside the metrics: they give the stage's own accuracies and paired deltas
    from prefsynth.compare import compare

    out = json.loads((tmp_path / "outcomes.json").read_text())
    assert out["policies"] == ["policy-0", "policy-1"] and out["baseline"] == "policy-0"
    assert [len(out["splits"][s]["prompt_ids"]) for s in ("test", "validation")] == [16, 8]
    for split, block in (("test", ev["policies"]), ("validation", val["policies"])):
        for name, res in block.items():
            bits = out["splits"][split]["policies"][name]
            assert set(bits) == {"greedy_accuracy", "maj_at_2", "pass_at_2"}
            assert bits["greedy_accuracy"].count("1") / len(bits["greedy_accuracy"]) == pytest.approx(
                res["greedy_accuracy"], abs=1e-9)
        got = compare([str(tmp_path / "outcomes.json")], None, None, None)["splits"][split]
        assert got["mean"] == block["policy-1"]["paired_delta_vs_first"]["greedy_accuracy"]["delta"]
        assert got["ci95"] == pytest.approx(block["policy-1"]["paired_delta_vs_first"]["greedy_accuracy"]["ci95"],
                                            abs=1e-4)


def test_kto_trainer_writes_a_policy(tmp_path):
    from helpers import tiny_random_policy, write_params
    from prefsynth.pipelines import train

    root = tmp_path
    (root / "prompts").mkdir()
    problems = arith.generate_problems(arith.ArithConfig(), 7, "test-kto", 0, 8)
    prompts = [arith_record(p, "test", 7, 0.0) for p in problems]
    write_table(records_to_table(prompts, "prompts", "test"), str(root / "prompts" / "part-0.parquet"))
    rows = []
    for i, (rec, prob) in enumerate(zip(prompts, problems)):
        rows.append({"example_id": f"k{i}a", "prompt_id": rec["prompt_id"], "prompt": rec["prompt"],
                     "completion": prob.solution, "label": True, "source_id": None, "label_source": "verifier"})
        rows.append({"example_id": f"k{i}b", "prompt_id": rec["prompt_id"], "prompt": rec["prompt"],
                     "completion": "A: 0\n", "label": False, "source_id": None, "label_source": "verifier"})
    (root / "pairs" / "kto").mkdir(parents=True)
    write_table(records_to_table(rows, "kto", "test"), str(root / "pairs" / "kto" / "part-0.parquet"))
    policy = tiny_random_policy(tmp_path / "p0")

    def run(seed: int, out: str) -> dict:
        params = write_params(tmp_path / f"params-{out}.json",
                              {"train": {"trainer": "kto", "max_steps": 2, "batch_size": 8, "seed": seed}})
        train.main(["--params", params, "--prompts", str(root / "prompts"), "--pairs", str(root / "pairs"),
                    "--policy", policy, "--out", str(tmp_path / out), "--metrics", str(tmp_path / f"{out}.json")])
        return json.loads((tmp_path / f"{out}.json").read_text())

    stats = run(1, "p1")
    assert stats["trainer"] == "kto" and stats["examples"] == 16 and stats["train_steps"] == 2
    assert (tmp_path / "p1" / "config.json").exists()
    # TRL's KTOTrainer reads its data in order (its KL term needs fixed batches), so the training seed must
    # reach the batch order through the rows' own order: another seed trains another model, the same seed the same
    run(1, "p1-again")
    run(2, "p2")
    weights = {out: (tmp_path / out / "model.safetensors").read_bytes() for out in ("p1", "p1-again", "p2")}
    assert weights["p1"] == weights["p1-again"]
    assert weights["p1"] != weights["p2"]


def test_kto_examples_honour_label_sources_and_max_pairs():
    from prefsynth.config.train import TrainConfig
    from prefsynth.pipelines.train import kto_examples

    rows = [{"example_id": f"e{i:02d}", "label_source": "verifier_arith" if i % 2 else "p_true"} for i in range(20)]
    picked = kto_examples(rows, TrainConfig(label_sources=["verifier"], max_pairs=4), seed=1)
    assert len(picked) == 4 and all(r["label_source"] == "verifier_arith" for r in picked)
    orders = {s: [r["example_id"] for r in kto_examples(rows, TrainConfig(), seed=s)] for s in (1, 2)}
    assert sorted(orders[1]) == sorted(orders[2]) == [r["example_id"] for r in rows]
    assert orders[1] != orders[2]


@pytest.mark.parametrize("source", ["verified_samples", "gold"])
def test_sft_baselines_train_on_their_source(tmp_path, source):
    """RFT (the round's verified-correct samples) and continued SFT on gold solutions: trainer sft."""
    from helpers import tiny_random_policy, write_params
    from prefsynth.backends.transformers_backend import TransformersBackend
    from prefsynth.pipelines import train

    root = tmp_path
    (root / "prompts").mkdir()
    problems = arith.generate_problems(arith.ArithConfig(), 7, "test-sft", 0, 10)
    prompts = [arith_record(p, "test", 7, 0.0) for p in problems]
    for i, rec in enumerate(prompts):
        rec["split"] = "test" if i >= 8 else "train"
    write_table(records_to_table(prompts, "prompts", "test"), str(root / "prompts" / "part-0.parquet"))
    rows = []
    for i, (rec, prob) in enumerate(zip(prompts[:6], problems)):
        for j, (text, ok) in enumerate([(prob.solution, True), (prob.solution, True), ("A: 0\n", False)]):
            rows.append({"example_id": f"k{i}{j}", "prompt_id": rec["prompt_id"], "prompt": rec["prompt"],
                         "completion": text, "label": ok, "source_id": None, "label_source": "verifier"})
    (root / "pairs" / "kto").mkdir(parents=True)
    write_table(records_to_table(rows, "kto", "test"), str(root / "pairs" / "kto" / "part-0.parquet"))
    params = write_params(tmp_path / "params.json", {"train": {"trainer": "sft", "sft_source": source,
                                                                "max_steps": 4, "batch_size": 4,
                                                                "learning_rate": 3e-3}})
    policy0 = tiny_random_policy(tmp_path / "p0")
    train.main(["--params", params, "--prompts", str(root / "prompts"), "--pairs", str(root / "pairs"),
                "--policy", policy0, "--out", str(tmp_path / "p1"), "--metrics", str(tmp_path / "train.json")])
    stats = json.loads((tmp_path / "train.json").read_text())
    # RFT: one example per distinct verified-correct text (6 prompts); gold: the 8 train prompts' solutions
    assert stats["trainer"] == "sft" and stats["sft_source"] == source and stats["train_steps"] == 4
    assert stats["examples"] == (6 if source == "verified_samples" else 8)
    # it learned the solutions it was shown: their log-prob went up
    rec, prob = prompts[0], problems[0]
    b0, b1 = TransformersBackend(policy0, device="cpu"), TransformersBackend(str(tmp_path / "p1"), device="cpu")
    assert b1.score([rec["prompt"]], [prob.solution])[0] > b0.score([rec["prompt"]], [prob.solution])[0]


def test_lora_sets_fan_in_fan_out_only_for_conv1d_models():
    """GPT-2's Conv1D weights are transposed (fan_in_fan_out); a Linear model (Llama / SmolLM2) must
    not get the flag, which peft would override with a warning."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from prefsynth.config import load_params
    from prefsynth.pipelines.train import _peft_config

    cfg = load_params(None, overrides={"train": {"lora": True}}).train
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=16))
    llama = LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=32,
                                         num_attention_heads=2, num_key_value_heads=2, vocab_size=32))
    assert _peft_config(cfg, gpt2).fan_in_fan_out is True
    assert _peft_config(cfg, llama).fan_in_fan_out is False
    assert _peft_config(load_params(None).train, llama) is None
