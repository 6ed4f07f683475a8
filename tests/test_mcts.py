"""MCTS core on hand-built trees, determinism across batch sizes, and the mcts stage."""

import json

import pytest

from prefsynth.backends.transformers_backend import TransformersBackend
from prefsynth.tasks import arith
from prefsynth.transforms.mcts import MCTSConfig, Node, backup, new_tree, node_rows, puct_select, search
from prefsynth.transforms.mcts_beam import policy_p_true, task_hooks

from helpers import tiny_random_policy, write_params


def _hand_tree():
    root = Node("r", None, "", 0, visits=4, value_sum=2.0, expanded=True)
    a = Node("a", root, "1+2=3", 1, prior=0.6, reward=0.2, visits=3, value_sum=1.5)
    b = Node("b", root, "1+2=4", 1, prior=0.4, reward=-0.1, visits=1, value_sum=0.2)
    root.children = [a, b]
    return root, a, b


def test_puct_selection_by_hand():
    root, a, b = _hand_tree()
    assert a.v == 0.5 and a.q() == pytest.approx(0.7) and b.q() == pytest.approx(0.1)
    # c=1: A = 0.7 + 0.6*2/4 = 1.0 ; B = 0.1 + 0.4*2/2 = 0.5
    assert puct_select(root, 1.0) is a
    # c=10: A = 0.7 + 3.0 = 3.7 ; B = 0.1 + 4.0 = 4.1 -> exploration wins
    assert puct_select(root, 10.0) is b
    # discounting lowers Q through V: gamma=0 leaves the rewards, A 0.2+0.3 vs B -0.1+0.4
    assert puct_select(root, 1.0, gamma=0.0) is a


def test_backup_by_hand():
    root, a, _ = _hand_tree()
    leaf = Node("l", a, "3*2=6", 2, reward=0.4)
    a.children = [leaf]
    backup(leaf, 0.3, gamma=1.0)
    assert (leaf.visits, leaf.value_sum) == (1, pytest.approx(0.3))
    assert (a.visits, a.value_sum) == (4, pytest.approx(1.5 + 0.7))  # 0.4 + 0.3
    assert (root.visits, root.value_sum) == (5, pytest.approx(2.0 + 0.9))  # 0.2 + 0.7
    backup(leaf, 0.3, gamma=0.5)
    assert a.value_sum == pytest.approx(2.2 + 0.4 + 0.5 * 0.3)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    return TransformersBackend(tiny_random_policy(tmp_path_factory.mktemp("m") / "policy-0", n_embd=32), batch_size=64)


PROMPTS = ["Q: 1+2=?\n", "Q: (20-3-8)*4=?\n", "Q: 7*8-5=?\n", "Q: 9+1+1=?\n", "Q: 5-5=?\n", "Q: 3*3=?\n"]


def _search(backend, prompts, per_batch, cfg):
    trees = []
    for i in range(0, len(prompts), per_batch):
        chunk = [new_tree(f"p{j}", p, str(arith.parse_expression(p).answer), "t")
                 for j, p in enumerate(prompts[i:i + per_batch], start=i)]
        search(chunk, backend, policy_p_true(backend, "arith"), task_hooks("arith"), cfg, seed=7)
        trees.extend(chunk)
    return [node_rows(t) for t in trees]


FLOATS = ("prior", "q", "value", "reward")


def _same_trees(a, b):
    """Same nodes, texts, visits and decisions; floats equal to float32 rounding (CPU kernels may
    differ in the last bits across batch shapes; the Beam stage fixes batches, so its bytes are exact)."""
    for ta, tb in zip(a, b, strict=True):
        assert [{k: v for k, v in r.items() if k not in FLOATS} for r in ta] == \
               [{k: v for k, v in r.items() if k not in FLOATS} for r in tb]
        for ra, rb in zip(ta, tb):
            for k in FLOATS:
                assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), (k, ra, rb)


def test_trees_do_not_depend_on_batch_size(backend):
    cfg = MCTSConfig(iterations=4, breadth=3, max_depth=3, max_step_tokens=8)
    together = _search(backend, PROMPTS, 6, cfg)
    apart = _search(backend, PROMPTS, 2, cfg)
    _same_trees(together, apart)
    for rows in together:
        root = [r for r in rows if r["parent_id"] is None]
        assert len(root) == 1 and root[0]["visits"] == cfg.iterations
        assert len(rows) > 1
        ids = {r["node_id"] for r in rows}
        assert all(r["parent_id"] in ids for r in rows if r["parent_id"])
        assert all(0 <= r["prior"] <= 1 for r in rows)
        # breadth limits children; duplicates are merged
        for r in rows:
            kids = [k for k in rows if k["parent_id"] == r["node_id"]]
            assert len(kids) <= cfg.breadth and len({k["step_text"] for k in kids}) == len(kids)


def test_paths_that_outgrow_the_context_end_the_search_there_without_failing(tmp_path):
    """The round-3 crash: a policy that writes long steps grows its paths past the tiny policy's
    context; the expansion of such a leaf gets no completion (a childless terminal leaf) and its
    self-evaluation question is not asked (P(True) 0.5), and every tree still comes back whole."""
    short = TransformersBackend(tiny_random_policy(tmp_path / "short", n_positions=32, n_embd=32), batch_size=64)
    cfg = MCTSConfig(iterations=6, breadth=2, max_depth=6, max_step_tokens=12)
    trees = [new_tree(f"p{j}", p, str(arith.parse_expression(p).answer), "t") for j, p in enumerate(PROMPTS)]
    search(trees, short, policy_p_true(short, "arith"), task_hooks("arith"), cfg, seed=3)
    assert all(t.failure is None for t in trees)
    deepest = max(len(t.prompt) + sum(len(n.step_text) + 1 for n in _path(node)) for t in trees for node in t.nodes())
    assert deepest > 32  # some path did reach the end of the context
    for t in trees:
        assert t.root.visits == cfg.iterations


def _path(node):
    while node is not None and node.parent is not None:
        yield node
        node = node.parent


def test_terminal_outcome_and_ground_truth_on_steps():
    hooks = task_hooks("arith")
    assert hooks.path_correct("Q: (20-3-8)*4=?\n", ["20-3=17", "17-8=9"]) is True
    assert hooks.path_correct("Q: (20-3-8)*4=?\n", ["20-3=17", "17-8=8"]) is False
    assert hooks.is_answer_step("A: 36") and hooks.answers_match(hooks.extract_answer("A: 36"), "36")


@pytest.mark.slow
def test_mcts_stage_on_the_embedded_world(tmp_path):
    from prefsynth.pipelines import mcts, prompts

    policy = tiny_random_policy(tmp_path / "policy-0", n_embd=32)
    params = write_params(tmp_path / "p.json", {
        "seed": 4, "prompts": {"n_prompts": 60},
        "mcts": {"max_prompts": 8, "trees_per_batch": 4, "split": "all",
                 "search": {"iterations": 3, "breadth": 2, "max_depth": 3, "max_step_tokens": 8}}})
    common = ["--params", params, "--reports", str(tmp_path / "reports")]
    prompts.main([*common, "--out", str(tmp_path / "prompts"), "--dead", str(tmp_path / "pd"),
                  "--metrics", str(tmp_path / "pm.json")])
    mcts.main([*common, "--prompts", str(tmp_path / "prompts"), "--policy", policy, "--responses", str(tmp_path / "none"),
               "--out", str(tmp_path / "trees"), "--dead", str(tmp_path / "dead"), "--metrics", str(tmp_path / "m.json")])
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["accounting"]["n_in"] == 8 and m["accounting"]["n_out"] == 8 and m["accounting"]["balanced"]
    assert m["trees"] == 8 and m["nodes"] > 8
    assert 0.0 <= m["trees_with_correct_terminal"] <= 1.0
    # two workers: the stage fixes each batch's trees, so the bytes are the same
    params2 = write_params(tmp_path / "p2.json", {**json.loads(open(params).read()), "beam": {"direct_num_workers": 2}})
    mcts.main(["--params", params2, "--reports", str(tmp_path / "reports"), "--prompts", str(tmp_path / "prompts"),
               "--policy", policy, "--responses", str(tmp_path / "none"), "--out", str(tmp_path / "trees2"),
               "--dead", str(tmp_path / "dead2"), "--metrics", str(tmp_path / "m2.json")])
    from pathlib import Path

    from prefsynth.schemas.io import dataset_files
    assert [Path(f).read_bytes() for f in dataset_files(str(tmp_path / "trees"))] == \
           [Path(f).read_bytes() for f in dataset_files(str(tmp_path / "trees2"))]
    # mcts.fresh_prompts_per_round: round 2 searches the next 8 prompts by id, none of round 1's
    from prefsynth.schemas.io import read_records
    params3 = write_params(tmp_path / "p3.json", {**json.loads(open(params).read()),
                                                  "mcts": {**json.loads(open(params).read())["mcts"],
                                                           "fresh_prompts_per_round": True}})
    mcts.main(["--params", params3, "--reports", str(tmp_path / "reports"), "--prompts", str(tmp_path / "prompts"),
               "--policy", policy, "--responses", str(tmp_path / "none"), "--out", str(tmp_path / "trees3"),
               "--dead", str(tmp_path / "dead3"), "--metrics", str(tmp_path / "m3.json"), "--iteration", "2"])
    all_ids = sorted({r["prompt_id"] for r in read_records(str(tmp_path / "prompts"))})
    assert sorted({r["prompt_id"] for r in read_records(str(tmp_path / "trees"))}) == all_ids[:8]
    assert sorted({r["prompt_id"] for r in read_records(str(tmp_path / "trees3"))}) == all_ids[8:16]


def test_step_confidence_reward_is_the_steps_least_likely_token_and_asks_nothing(backend):
    """self_eval: step_confidence rewards a new step with 2 p - 1, p the probability of its least likely
    token when it was sampled, without a P(True) call; answer steps wait for the outcome."""
    import math

    from prefsynth.backends.base import SamplingParams
    from prefsynth.ids import seed_for

    cfg = MCTSConfig(iterations=3, breadth=3, max_depth=3, max_step_tokens=8, self_eval="step_confidence",
                     outcome_weight=0.0)
    asked = []

    def p_true(prompts, steps):
        asked.append(len(prompts))
        return [0.5] * len(prompts)

    trees = [new_tree("p0", PROMPTS[1], "36", "t")]
    search(trees, backend, p_true, task_hooks("arith"), cfg, seed=7)
    assert not asked
    hooks = task_hooks("arith")
    kids = [n for n in trees[0].root.children]
    assert kids
    # the root's expansion again, as the search drew it (same seed): each child's reward from its tokens
    sp = SamplingParams(n=cfg.breadth, temperature=cfg.temperature(0), max_new_tokens=cfg.max_step_tokens,
                        stop=("\n",))
    (group,) = backend.generate([trees[0].prompt], sp, [seed_for(7, trees[0].root.node_id, "expand")])
    least: dict[str, float] = {}
    for c in group:
        if c.text.strip():
            least[c.text.strip()] = max(least.get(c.text.strip(), 0.0), math.exp(min(c.logprobs)))
    for n in kids:
        want = 0.0 if hooks.is_answer_step(n.step_text) else 2 * least[n.step_text] - 1
        assert n.reward == pytest.approx(want, rel=1e-6, abs=1e-9)
    with pytest.raises(ValueError, match="self_eval"):
        MCTSConfig(self_eval="judge")
