"""MCTS over reasoning steps, batched across trees (pure Python over a backend; no Beam).

Follows the MCTS-DPO recipe (Xie et al. 2024): PUCT selection
    score(child) = Q(child) + c_puct * prior(child) * sqrt(N(parent)) / (1 + N(child)),
priors from each candidate step's length-normalised log-prob (exp of the mean token log-prob,
normalised over siblings), expansion by sampling `breadth` candidate next steps (stopping at the
end of a step) with duplicates merged, node reward from the policy's stepwise self-evaluation
P(True) (mapped to [-1, 1]) plus outcome validation at terminal nodes (+1 / -1 from the task's
verifier when a reference exists), and backup of Q (mean return) and V along the path.

Batching: every iteration selects one leaf in each active tree, expands all of them with ONE
generate call and scores all new children with ONE reward call. A node's samples are seeded by
(seed, node id), and node ids are content hashes of the path, so the trees do not depend on the
batch size or on which worker searched them.

A failed expansion request (the backend returns a failure instead of completions) is not a leaf
without children: the tree's search stops and `tree.failure` holds the failure; the stage writes
the tree as a dead letter and none of its nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from prefsynth.backends.base import Backend, SamplingParams
from prefsynth.ids import content_id, seed_for


@dataclass(frozen=True)
class MCTSConfig:
    """Search settings. MCTS-DPO's own runs use c_puct=1 and a breadth of 3-4 candidate steps;
    the iteration and depth limits here are sized for the tiny arith world."""

    iterations: int = 12  # simulations (select -> expand -> evaluate -> backup) per tree
    breadth: int = 3  # candidate next steps sampled per expansion (before de-duplication)
    max_depth: int = 6  # steps below the root; deeper paths are cut and count as wrong
    c_puct: float = 1.0  # exploration weight of PUCT
    gamma: float = 1.0  # discount of later rewards in the backup
    temperature_start: float = 1.0  # expansion temperature at the first iteration ...
    temperature_end: float = 0.7  # ... annealed linearly to this at the last
    self_eval_weight: float = 1.0  # weight of the self-evaluation reward (2 * p - 1)
    # p of a new step: p_true (the policy asked `OK?` after it: one score call per expansion) |
    # step_confidence (the probability of the step's least likely token when it was sampled: free;
    # the least likely token, not the mean, because one wrong digit among sure ones barely moves a
    # mean, which leaves 2p - 1 positive for wrong steps too)
    self_eval: str = "p_true"
    outcome_weight: float = 1.0  # weight of the terminal +1/-1 outcome, when a reference exists
    max_step_tokens: int = 24  # longest step, in tokens
    step_stop: str = "\n"  # end of a step (and what joins the steps of a path in the next context)
    blank_line_retry: bool = True  # re-expand, once, a leaf whose samples were all empty (a blank line first)

    def __post_init__(self):
        if self.self_eval not in ("p_true", "step_confidence"):
            raise ValueError(f"mcts.search.self_eval must be p_true or step_confidence, got {self.self_eval!r}")

    def temperature(self, it: int) -> float:
        if self.iterations <= 1:
            return self.temperature_start
        frac = it / (self.iterations - 1)
        return self.temperature_start + frac * (self.temperature_end - self.temperature_start)


@dataclass
class Node:
    node_id: str
    parent: "Node | None"
    step_text: str
    depth: int
    prior: float = 1.0
    reward: float = 0.0
    visits: int = 0
    value_sum: float = 0.0
    terminal: bool = False
    final_answer: str | None = None
    verified_correct: bool | None = None
    children: list["Node"] = field(default_factory=list)
    expanded: bool = False

    @property
    def v(self) -> float:
        """V: the mean return after this step (0 before any visit)."""
        return self.value_sum / self.visits if self.visits else 0.0

    def q(self, gamma: float = 1.0) -> float:
        """Q of the step that leads here: its own reward plus the discounted value after it."""
        return self.reward + gamma * self.v

    def path_steps(self) -> list[str]:
        steps, node = [], self
        while node.parent is not None:
            steps.append(node.step_text)
            node = node.parent
        return steps[::-1]


@dataclass
class Tree:
    tree_id: str
    prompt_id: str
    prompt: str
    reference: str | None
    root: Node
    failure: object | None = None  # the backend's failure of an expansion: the tree is a dead letter, not data

    def nodes(self) -> list[Node]:
        out, stack = [], [self.root]
        while stack:
            n = stack.pop()
            out.append(n)
            stack.extend(reversed(n.children))
        return out


@dataclass
class TaskHooks:
    """What the search needs from a task: is a step the final answer, its answer, is it right,
    and the ground truth of a path (None where unknown)."""

    is_answer_step: Callable[[str], bool]
    extract_answer: Callable[[str], str | None]
    answers_match: Callable[[str | None, str | None], bool]
    path_correct: Callable[[str, list[str]], bool | None] = lambda prompt, steps: None


# A reward function: for each (prompt, steps so far), the P(True) of the last step.
StepPTrue = Callable[[Sequence[str], Sequence[list[str]]], list[float]]


def puct_select(node: Node, c_puct: float, gamma: float = 1.0) -> Node:
    """The child maximising Q + c * p * sqrt(N_parent) / (1 + N); ties go to the first child."""
    sqrt_n = math.sqrt(max(node.visits, 1))
    best, best_score = None, -math.inf
    for child in node.children:
        score = child.q(gamma) + c_puct * child.prior * sqrt_n / (1 + child.visits)
        if score > best_score:
            best, best_score = child, score
    return best


def select_leaf(tree: Tree, c_puct: float, gamma: float = 1.0) -> Node:
    node = tree.root
    while node.expanded and node.children and not node.terminal:
        node = puct_select(node, c_puct, gamma)
    return node


def backup(leaf: Node, leaf_value: float, gamma: float) -> None:
    """Add the return to every node on the path: G(node) = r(node) + gamma * G(child below)."""
    g, node = leaf_value, leaf
    while node is not None:
        node.visits += 1
        node.value_sum += g
        g = node.reward + gamma * g
        node = node.parent


def new_tree(prompt_id: str, prompt: str, reference: str | None, tag: str) -> Tree:
    tree_id = content_id("tree", prompt_id, tag)
    return Tree(tree_id, prompt_id, prompt, reference, Node(content_id(tree_id, "root"), None, "", 0))


def search(trees: list[Tree], backend: Backend, p_true: StepPTrue, hooks: TaskHooks, cfg: MCTSConfig,
           seed: int, on_call: Callable[[str, int, int], None] | None = None) -> list[Tree]:
    """Run `cfg.iterations` simulations on every tree, batching model calls across trees: each
    iteration is one generate call for the expansions of every active tree (plus one for leaves
    re-expanded after a blank line) and one batched reward call for all their new children.
    `on_call(kind, n_items, generated_tokens)` is told of each call."""
    for it in range(cfg.iterations):
        leaves = []
        for tree in trees:
            if tree.failure is not None:  # a failed expansion ends the tree's search: it is a dead letter
                continue
            leaf = select_leaf(tree, cfg.c_puct, cfg.gamma)
            leaves.append((tree, leaf))
        if not leaves:
            break
        to_expand = [(t, n) for t, n in leaves if not n.terminal and not n.expanded]
        if to_expand:
            _expand(to_expand, backend, p_true, hooks, cfg, seed, cfg.temperature(it), on_call)
        for tree, leaf in leaves:
            if tree.failure is not None:
                continue
            if leaf.children:
                value = sum(c.reward for c in leaf.children) / len(leaf.children)
            else:
                value = 0.0  # terminal: its own reward is added by backup
            backup(leaf, value, cfg.gamma)
    return trees


def _tokens(groups) -> int:
    return sum(c.n_tokens for g in groups if isinstance(g, list) for c in g)


def _expand(items, backend, p_true, hooks, cfg, seed, temperature, on_call) -> None:
    contexts = [t.prompt + "".join(s + cfg.step_stop for s in leaf.path_steps()) for t, leaf in items]
    sp = SamplingParams(n=cfg.breadth, temperature=temperature, max_new_tokens=cfg.max_step_tokens,
                        stop=(cfg.step_stop,))
    groups = backend.generate(contexts, sp, [seed_for(seed, leaf.node_id, "expand") for _, leaf in items])
    if on_call:
        on_call("generate", len(contexts), _tokens(groups))
    # Instruct models often separate steps with a blank line: after "step\n" their first token is
    # another "\n", which ends the expansion at once with nothing in it. Such leaves are expanded
    # again with the blank line in their context (one more batched call, only for them).
    empty = [i for i, g in enumerate(groups) if isinstance(g, list) and g and
             not any(c.text.strip() for c in g) and any(c.finish_reason == "stop" for c in g)]
    if empty and cfg.blank_line_retry:
        again = backend.generate([contexts[i] + cfg.step_stop for i in empty], sp,
                                 [seed_for(seed, items[i][1].node_id, "expand/blank-line") for i in empty])
        if on_call:
            on_call("generate", len(empty), _tokens(again))
        for i, g in zip(empty, again):
            groups[i] = g
    new_children: list[tuple[Tree, Node]] = []
    weakest: list[float] = []  # per new child: its step's least likely token's probability (self_eval: step_confidence)
    for (tree, leaf), group in zip(items, groups):
        if not isinstance(group, list):
            # a failed request is a failure, never a childless terminal leaf: the tree becomes a dead letter
            tree.failure = group
            continue
        leaf.expanded = True
        merged: dict[str, tuple[float, float]] = {}  # step text -> (prior, least likely token's probability)
        for c in group:
            text = c.text.strip()
            if not text:
                continue
            prior = math.exp(c.mean_logprob) if c.mean_logprob is not None else 1.0 / cfg.breadth
            least = math.exp(min(c.logprobs)) if c.logprobs else prior
            old = merged.get(text, (0.0, 0.0))
            merged[text] = (max(old[0], prior), max(old[1], least))  # duplicates merge; keep the likelier
        total = sum(p for p, _ in merged.values()) or 1.0
        for text, (prior, least) in merged.items():
            child = Node(content_id(tree.tree_id, leaf.node_id, text), leaf, text, leaf.depth + 1, prior / total)
            leaf.children.append(child)
            new_children.append((tree, child))
            weakest.append(least)
        if not leaf.children:
            leaf.terminal = True
    if not new_children:
        return
    if cfg.self_eval == "step_confidence":
        # answer steps are judged by the outcome, as in the P(True) reward
        probs = [0.5 if hooks.is_answer_step(c.step_text) else w for (_, c), w in zip(new_children, weakest)]
    else:
        probs = p_true([t.prompt for t, _ in new_children], [c.path_steps() for _, c in new_children])
        if on_call:
            on_call("reward", len(new_children), 0)
    for (tree, child), p in zip(new_children, probs):
        steps = child.path_steps()
        child.reward = cfg.self_eval_weight * (2.0 * p - 1.0)
        child.verified_correct = hooks.path_correct(tree.prompt, steps)
        if hooks.is_answer_step(child.step_text) or child.depth >= cfg.max_depth:
            child.terminal = True
            child.final_answer = hooks.extract_answer(child.step_text)
            if tree.reference is not None:
                right = hooks.answers_match(child.final_answer, tree.reference)
                child.reward += cfg.outcome_weight * (1.0 if right else -1.0)


def node_rows(tree: Tree, gamma: float = 1.0) -> list[dict]:
    """One tree_nodes row per node (schema `tree_nodes`): q is Q of the step into the node,
    value is V after it."""
    return [{
        "node_id": n.node_id, "tree_id": tree.tree_id, "prompt_id": tree.prompt_id,
        "parent_id": n.parent.node_id if n.parent else None, "depth": n.depth, "step_text": n.step_text,
        "prior": n.prior, "visits": n.visits, "q": n.q(gamma), "value": n.v, "reward": n.reward,
        "terminal": n.terminal, "final_answer": n.final_answer, "verified_correct": n.verified_correct,
    } for n in tree.nodes()]
