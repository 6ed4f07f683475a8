"""A model call that fails mid-MCTS or mid-MC-labelling gives dead letters, never labels or leaves."""

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.testing.util import assert_that

from prefsynth.backends.base import Completion
from prefsynth.backends.openai_backend import GenerationFailure
from prefsynth.config import PolicyConfig
from prefsynth.tasks import arith
from prefsynth.transforms.deadletters import DEAD
from prefsynth.transforms.mc_labels import MCLabelConfig, ResponseToLabel, label_binary_search, label_every_prefix, label_rows
from prefsynth.transforms.mcts import MCTSConfig, new_tree, node_rows, search
from prefsynth.transforms.mcts_beam import SearchBatch, SearchTrees, task_hooks
from prefsynth.transforms.model_handler import BackendModelHandler

from helpers import arith_prefix

PROMPTS = ["Q: (20-3-8)*4+5-6=?\n", "Q: 7+8*2=?\n", "Q: (3+4)*5-6=?\n", "Q: 9*3-7+1=?\n"]


class NextStep:
    """Writes the next right step of any arith prefix (the answer line after the last operation)."""

    name = "next-step"

    def generate(self, prompts, sampling, seeds=None):
        out = []
        for p in prompts:
            problem, done, cur = arith_prefix(p)
            todo = list(zip(problem.ops, problem.operands))[len(done):]
            if todo:
                op, b = todo[0]
                text = f"{cur}{op}{b}={arith.apply_op(cur, op, b)}"
            else:
                text = f"A: {cur}"
            if not sampling.stop:
                text = text + "\n" + "".join(f"{s}\n" for s in [])  # a rollout: complete from here
                rest = NextStep._complete(problem, done + [text.strip()])
                text = "\n".join([text.strip(), *rest]) + "\n"
            out.append([Completion(text, [0] * len(text), [-0.1] * len(text), "stop") for _ in range(sampling.n)])
        return out

    @staticmethod
    def _complete(problem, done):
        if done[-1].startswith("A:"):
            return []
        cur, lines = int(done[-1].split("=")[-1]), []
        for op, b in list(zip(problem.ops, problem.operands))[len(done):]:
            nxt = arith.apply_op(cur, op, b)
            lines.append(f"{cur}{op}{b}={nxt}")
            cur = nxt
        return lines + [f"A: {cur}"]

    def score(self, prompts, continuations):
        return [0.0 for _ in prompts]


class KilledAfter:
    """The backend, until `ok_calls` generate calls have been answered; then every request whose
    prompt contains `victim` fails (as the OpenAI backend reports a request that failed every retry)."""

    name = "killed"

    def __init__(self, inner, ok_calls: int, victim: str):
        self.inner, self.ok_calls, self.victim, self.calls = inner, ok_calls, victim, 0

    def generate(self, prompts, sampling, seeds=None):
        self.calls += 1
        out = self.inner.generate(prompts, sampling, seeds)
        if self.calls <= self.ok_calls:
            return out
        return [GenerationFailure("http_500", "server error (injected)", '{"error": "boom"}')
                if self.victim in p else g for p, g in zip(prompts, out)]

    def score(self, prompts, continuations):
        return self.inner.score(prompts, continuations)


CFG = MCTSConfig(iterations=6, breadth=2)


def _trees(backend):
    trees = [new_tree(f"p{i}", p, str(arith.parse_expression(p).answer), "t") for i, p in enumerate(PROMPTS)]
    hooks = task_hooks("arith")
    search(trees, backend, lambda ps, ss: [0.9] * len(ps), hooks, CFG, 0)
    return trees


def test_mcts_expansion_failure_marks_the_tree_failed_not_a_terminal_leaf():
    healthy = _trees(NextStep())
    killed = _trees(KilledAfter(NextStep(), ok_calls=2, victim="7+8*2"))
    assert all(t.failure is None for t in healthy)
    assert [t.failure is not None for t in killed] == [False, True, False, False]
    assert killed[1].failure.error_type == "http_500"
    # no node of the failed tree is a childless terminal leaf without an answer
    assert not any(n.terminal and n.final_answer is None and not n.children for n in killed[1].nodes())
    # the other trees are untouched by their neighbour's failure
    for a, b in ((0, 0), (2, 2), (3, 3)):
        assert node_rows(healthy[a]) == node_rows(killed[b])


class _KilledBackendHandler(BackendModelHandler):
    def load_backend(self):
        return KilledAfter(NextStep(), ok_calls=2, victim="7+8*2")


class _KilledSearch(SearchBatch):
    def handler(self):
        return _KilledBackendHandler(self.policy, self.model, self, "mcts")


def test_mcts_stage_transform_writes_a_dead_letter_for_the_failed_tree():
    searcher = _KilledSearch(PolicyConfig(), "unused", CFG, 0, "t")
    recs = [{"prompt_id": f"p{i}", "prompt": p, "task": "arith", "reference_answer": str(arith.parse_expression(p).answer)}
            for i, p in enumerate(PROMPTS)]

    def check_rows(rows):
        assert {r["prompt_id"] for r in rows} == {"p0", "p2", "p3"}, "the failed tree wrote nodes"

    def check_dead(dead):
        assert [(d["record_id"], d["error_type"]) for d in dead] == [("p1", "mcts_expansion_failed")]
        assert "http_500" in dead[0]["message"] and dead[0]["raw_output"] == '{"error": "boom"}'

    with beam.Pipeline("FnApiRunner") as p:
        out = p | beam.Create(recs) | SearchTrees(searcher, trees_per_batch=4)
        assert_that(out.rows, check_rows, label="rows")
        assert_that(out[DEAD], check_dead, label="dead")


def _wrong_at(prompt, k):
    p = arith.parse_expression(prompt)
    steps, cur = [], p.first
    for i, (op, b) in enumerate(zip(p.ops, p.operands)):
        nxt = arith.apply_op(cur, op, b) + (1 if i == k else 0)
        steps.append(f"{cur}{op}{b}={nxt}")
        cur = nxt
    return steps + [f"A: {cur}"]


def _responses(prompt=PROMPTS[0]):
    ref = str(arith.parse_expression(prompt).answer)
    return [ResponseToLabel("ok", prompt, _wrong_at(prompt, 3), ref),
            ResponseToLabel("killed", prompt + " ", _wrong_at(prompt, 3), ref)]


def test_a_failed_mc_probe_is_not_a_detected_first_error():
    for run in (label_binary_search, label_every_prefix):
        healthy, killed = _responses(), _responses()
        run(healthy, NextStep(), MCLabelConfig(rollouts=2), 0, arith.answers_match, arith.extract_answer)
        # every probe of the victim fails (its prompt has a trailing space); the other response is answered
        run(killed, KilledAfter(NextStep(), ok_calls=0, victim="=?\n "), MCLabelConfig(rollouts=2), 0,
            arith.answers_match, arith.extract_answer)
        method = "binary" if run is label_binary_search else "every"
        assert label_rows(killed[0], method) == label_rows(healthy[0], method)
        rows = label_rows(killed[1], method)
        assert len(rows) == 1 and rows[0]["label"] == "unlabeled" and rows[0]["score"] is None
        assert rows[0]["target_kind"] == "response" and "http_500" in rows[0]["rationale"]


def test_label_stage_turns_unlabeled_mc_rows_into_dead_letters():
    from prefsynth.pipelines.label import mc_rows_or_dead

    healthy, killed = _responses(), _responses()
    label_binary_search(healthy[:1], NextStep(), MCLabelConfig(rollouts=2), 0, arith.answers_match,
                        arith.extract_answer)
    label_binary_search(killed[1:], KilledAfter(NextStep(), 0, "=?\n "), MCLabelConfig(rollouts=2), 0,
                        arith.answers_match, arith.extract_answer)
    rows = label_rows(healthy[0], "binary") + label_rows(killed[1], "binary")

    def check_labels(labels):
        assert labels and {r["target_id"] for r in labels} == {"ok"} and all(r["label"] != "unlabeled" for r in labels)

    def check_dead(dead):
        assert [(d["record_id"], d["error_type"]) for d in dead] == [("mc_binary/killed", "mc_probe_failed")]
        assert '{"error": "boom"}' == dead[0]["raw_output"]

    with beam.Pipeline("FnApiRunner") as p:
        out = (p | beam.Create([PredictionResult({"response_id": "batch"}, rows)])
               | beam.FlatMap(mc_rows_or_dead).with_outputs(DEAD, main="labels"))
        assert_that(out.labels, check_labels, label="labels")
        assert_that(out[DEAD], check_dead, label="dead")
