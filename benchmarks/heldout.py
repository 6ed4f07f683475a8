"""Held-out responses for the label benchmarks (mc_label_rules.py, step_confidence.py).

The label stage's own responses are all on train prompts; these benchmarks sample the policy on
the validation and test prompts instead, seeded per prompt, at the generate stage's settings.
"""

from __future__ import annotations


def sample_heldout(backend, params, task, prompts: list[dict], samples: int, purpose: str) -> list[dict]:
    """`samples` responses per prompt (seed_for(seed, prompt id, purpose)); those with no step are
    skipped. Each: response_id (prompt id/j), prompt_id, split, text, steps, final_answer, reference."""
    from prefsynth.backends.base import SamplingParams
    from prefsynth.ids import seed_for

    g = params.generate
    sp = SamplingParams(n=samples, temperature=g.temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens)
    groups = backend.generate([p["prompt"] for p in prompts], sp,
                              [seed_for(params.seed, p["prompt_id"], purpose) for p in prompts])
    out = []
    for p, group in zip(prompts, groups):
        for j, c in enumerate(group):
            steps = task.split_steps(c.text)
            if steps:
                out.append({"response_id": f"{p['prompt_id']}/{j}", "prompt_id": p["prompt_id"], "split": p["split"],
                            "text": c.text, "steps": steps, "final_answer": task.extract_answer(c.text),
                            "reference": p["reference_answer"]})
    return out


def line_logprobs(backend, contexts: list[str], lines: list[str]) -> tuple[list[float], list[float]]:
    """(total, mean per token) log-probability of each line (with its newline) after its context: the
    step_confidence judge's score of a step, before exp."""
    totals = backend.score(contexts, [x + "\n" for x in lines])
    tok = backend.tokenizer
    means = [lp / max(1, len(tok(x + "\n", add_special_tokens=False)["input_ids"])) for lp, x in zip(totals, lines)]
    return totals, means
