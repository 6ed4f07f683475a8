"""The generate stage for real: Beam + RunInference + the transformers backend, and the same
stage through a real OpenAI-compatible server process."""

import json
from pathlib import Path

import pytest

from prefsynth.pipelines import generate, prompts
from prefsynth.schemas.io import dataset_files, read_records
from prefsynth.tasks import arith

from helpers import FailingServer, ServeProcess, tiny_random_policy, write_params


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    params = write_params(root / "prompts.json", {"seed": 3, "prompts": {"n_prompts": 60}})
    prompts.main(["--params", params, "--out", str(root / "prompts"), "--dead", str(root / "pdead"),
                  "--metrics", str(root / "pm.json"), "--reports", str(root / "reports")])
    policy = tiny_random_policy(root / "policy-0")
    return root, policy


def _generate(root: Path, policy_dir: str, name: str, iteration: int = 0, **groups) -> tuple[Path, dict]:
    cfg = {"seed": 3, "generate": {"n": 3, "max_new_tokens": 12, "split": "all", **groups.pop("generate", {})},
           **groups}
    params = write_params(root / f"{name}.json", cfg)
    out = root / name
    generate.main(["--params", params, "--prompts", str(root / "prompts"), "--policy", policy_dir,
                   "--out", str(out / "responses"), "--dead", str(out / "dead"), "--metrics", str(out / "m.json"),
                   "--reports", str(out / "reports"), "--iteration", str(iteration)])
    return out, json.loads((out / "m.json").read_text())


def test_responses_are_complete_and_identical_on_one_or_two_workers(world):
    root, policy = world
    one, m1 = _generate(root, policy, "w1", beam={"direct_num_workers": 1})
    two, m2 = _generate(root, policy, "w2", beam={"direct_num_workers": 2})
    acc = m1["accounting"]
    assert acc["n_in"] == 60 and acc["n_out"] == 60 and acc["balanced"]
    rows = read_records(str(one / "responses"))
    assert len(rows) == 180 and m1["responses"] == 180 and m1["tokens"] == sum(r["n_tokens"] for r in rows)
    by_prompt = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], []).append(r["sample_index"])
        assert r["policy"] == "policy-0" and r["source"] == "transformers"
        assert r["steps"] == arith.split_steps(r["text"])
        assert r["n_tokens"] <= 12 and r["finish_reason"] in ("stop", "length")
        assert r["mean_logprob"] is None or r["mean_logprob"] <= 0
    assert all(sorted(v) == [0, 1, 2] for v in by_prompt.values())
    assert [Path(f).read_bytes() for f in dataset_files(str(one / "responses"))] == \
           [Path(f).read_bytes() for f in dataset_files(str(two / "responses"))]


def test_per_call_padding_is_identical_on_one_or_two_workers(world):
    """policy.batch_invariant: false pads each call to its longest prompt: a prompt's bits then
    depend on its batch-mates, which DeterministicBatches fixes, so the bytes still do not depend
    on the worker count (several Beam batches here: 24 sequences per batch, 8 prompts x 3)."""
    root, policy = world
    pol = {"batch_invariant": False, "batch_size": 24}
    one, m1 = _generate(root, policy, "pc1", policy=pol, beam={"direct_num_workers": 1})
    two, _ = _generate(root, policy, "pc2", policy=pol, beam={"direct_num_workers": 2})
    assert m1["accounting"]["balanced"] and m1["responses"] == 180
    assert [Path(f).read_bytes() for f in dataset_files(str(one / "responses"))] == \
           [Path(f).read_bytes() for f in dataset_files(str(two / "responses"))]


def test_over_long_prompts_go_to_dead_letters_or_are_truncated(world, tmp_path):
    root, _ = world
    short_ctx = tiny_random_policy(tmp_path / "policy-short", n_positions=24)
    # prompts are 12-20 chars: with max_new_tokens=12 some do not fit a 24-token context
    out, m = _generate(root, short_ctx, "long", max_dead_fraction=1)  # most prompts too long, on purpose
    acc = m["accounting"]
    assert acc["balanced"] and acc["dead"].get("prompt_too_long", 0) > 0 and acc["n_out"] > 0
    dead = read_records(str(out / "dead"))
    assert all(d["error_type"] == "prompt_too_long" and "tokens" in d["message"] and d["raw_input"] for d in dead)
    out2, m2 = _generate(root, short_ctx, "trunc", generate={"truncate_long_prompts": True})
    assert m2["accounting"]["n_dead"] == 0 and m2["truncated_prompts"] == 3 * acc["dead"]["prompt_too_long"]


def test_generate_through_a_real_openai_compatible_server(world):
    root, policy = world
    with ServeProcess(policy) as server:
        out, m = _generate(root, policy, "http", policy={"backend": "openai", "base_url": server.base_url,
                                                         "model": server.name, "vocab_size": 34},
                           generate={"max_prompts": 10})
    acc = m["accounting"]
    assert acc["n_in"] == 10 and acc["n_out"] == 10 and acc["balanced"]
    rows = read_records(str(out / "responses"))
    assert len(rows) == 30 and all(r["source"] == "openai" for r in rows)
    # an empty completion (EOS first) has no tokens to measure; every other one has both
    assert all(r["self_certainty"] is not None and r["sum_logprob"] is not None for r in rows if r["n_tokens"])
    assert sum(r["n_tokens"] > 0 for r in rows) >= 25


def test_server_failures_become_dead_letters_with_the_raw_body(world):
    root, policy = world
    with FailingServer(status=500, body='{"error": "GPU fell off the bus"}') as server:
        out, m = _generate(root, policy, "fail", max_dead_fraction=1, policy={"backend": "openai", "base_url": server.base_url,
                                                         "model": "x", "max_retries": 1},
                           generate={"max_prompts": 4, "n": 1})
    acc = m["accounting"]
    assert acc["n_in"] == 4 and acc["dead"] == {"http_500": 4} and acc["n_out"] == 0 and acc["balanced"]
    dead = read_records(str(out / "dead"))
    assert all("GPU fell off the bus" in d["raw_output"] for d in dead)
    assert server.hits == 8  # every request tried twice


def test_fresh_prompts_per_round_give_each_round_its_own_block_by_id(world):
    """generate.fresh_prompts_per_round: round r samples prompts (r-1)*N+1 .. r*N in id order, so
    three rounds of 20 cover the 60 prompts once each; a round past the split's end is an error
    naming the numbers, not a short round."""
    root, policy = world
    all_ids = sorted({r["prompt_id"] for r in read_records(str(root / "prompts"))})
    blocks = []
    for it in (1, 2, 3):
        out, m = _generate(root, policy, f"fresh{it}", iteration=it,
                           generate={"max_prompts": 20, "n": 1, "fresh_prompts_per_round": True})
        acc = m["accounting"]
        assert acc["n_in"] == 20 and acc["n_out"] == 20 and acc["balanced"]
        blocks.append(sorted({r["prompt_id"] for r in read_records(str(out / "responses"))}))
    assert blocks == [all_ids[0:20], all_ids[20:40], all_ids[40:60]]
    # the progress total the stage gives its workers is the block's size, read in one pass
    from prefsynth.transforms.prompts import select_round_prompts

    for it, expected in ((3, 20), (0, 20)):
        select, count = select_round_prompts("generate", str(root / "prompts"), "all", 20, True, it)
        assert count == expected and select.offset == 20 * max(it - 1, 0)
    assert select_round_prompts("generate", str(root / "prompts"), "all", None, False, 2)[1] == 60
    assert select_round_prompts("generate", str(root / "nowhere"), "all", 20, False, 1)[1] is None
    # without the flag every round samples the first block
    out, _ = _generate(root, policy, "same2", iteration=2, generate={"max_prompts": 20, "n": 1})
    assert sorted({r["prompt_id"] for r in read_records(str(out / "responses"))}) == blocks[0]
    with pytest.raises(ValueError, match=r"round 4 needs all prompts 61-80 by id, but the split has 60"):
        _generate(root, policy, "fresh4", iteration=4,
                  generate={"max_prompts": 20, "n": 1, "fresh_prompts_per_round": True})
    with pytest.raises(ValueError, match="needs generate.max_prompts"):
        _generate(root, policy, "fresh_all", iteration=1, generate={"fresh_prompts_per_round": True})
