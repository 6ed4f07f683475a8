"""The candidates stage: candidate pairs from every label source (data/candidates)."""

from __future__ import annotations

from dataclasses import dataclass

from prefsynth.config.fields import option as _f

STEP_DPO_SPANS = ("step", "rest", "full", "sampled")  # what a Step-DPO pair's sides hold (CandidatesConfig)
# the spans whose chosen side is the task's expected steps from the first wrong one on: only for tasks whose
# expected steps are a whole correct solution (arith); elsewhere (gsm8k's calculations) they fall back to "step"
WHOLE_SOLUTION_SPANS = ("rest", "full")


@dataclass
class CandidatesConfig:
    response_sources: list = _f(["verifier", "self_consistency"],
                                "Label sources of response-level pairs: labeler-name prefixes in data/labels "
                                "(verifier, p_true, judge_...; each matching labeler is its own source), plus "
                                "self_consistency (majority vs minority answer) and self_certainty (Borda winner), "
                                "computed here from the samples. The first source also labels the KTO view.")
    max_response_pairs: int = _f(2, "Response-level pairs per prompt and source at most (best vs worst first).")
    min_margin: float = _f(0.5, "Smallest score gap for a response-level pair.")
    min_margins: dict = _f({}, "Per-source override of min_margin (source prefix -> gap), e.g. {p_true: 0.2}.")
    borda_power: float = _f(0.5, "self_certainty source: rank r of N gives (N-r+1)**power Borda points to its "
                            "answer (0: plain majority; large: Best-of-N by self-certainty).")
    min_q_gap: float = _f(0.1, "Smallest Q gap between MCTS siblings for a step-level pair.")
    step_dpo: bool = _f(True, "Step-DPO pairs at each response's first wrong step (tasks with exact steps).")
    max_step_dpo_per_prompt: int = _f(4, "Responses per prompt that give Step-DPO pairs.")
    step_dpo_span: str = _f("step", "What a Step-DPO pair's sides hold: step (the corrected first wrong step vs the "
                            "wrong one, after the shared correct prefix, as in Step-DPO); rest (the verified rest of "
                            "the solution vs the response's own rest); full (prompt = the question: the response "
                            "with its rest corrected vs the whole response); rest and full need exact steps, "
                            "elsewhere step is used and counted as step_dpo_span_fallback; sampled (the rest of "
                            "the policy's own verified-correct sample of the prompt that shares the prefix vs the "
                            "response's rest; no pair where no sample shares it, counted as "
                            "step_dpo_no_sampled_rest). The README measures them against response pairs.")
    num_shards: int = _f(1, "Parquet files per pair view.")

    def __post_init__(self):
        if self.step_dpo_span not in STEP_DPO_SPANS:
            raise ValueError(f"candidates.step_dpo_span must be one of {', '.join(STEP_DPO_SPANS)}, "
                             f"got {self.step_dpo_span!r}")
