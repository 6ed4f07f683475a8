"""card stage: a Hugging Face dataset card from the real run, the data views beside it, and an
opt-in Hub push.

Writes card/README.md (YAML metadata: license, task categories, tags, size category, one
config per view, features derived from the Arrow schemas) and card/data/<view>/*.parquet (a view
that carries a split, its own column or its prompts', is published as Hugging Face splits
train / validation / test), plus
metrics/run_summary.json (the accounting of every stage). `card.push: true` uploads the folder;
the token comes from HF_TOKEN or the HF login and is never printed or written.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import yaml

from prefsynth import __version__
from prefsynth.config import load_params, to_dict
from prefsynth.pipelines.cli_args import add_outputs, stage_parser
from prefsynth.pipelines.stage import write_metrics
from prefsynth.schemas import SCHEMA_VERSION
from prefsynth.schemas.io import dataset_files, read_table

log = logging.getLogger("prefsynth")
TEMPLATE = Path(__file__).resolve().parents[1] / "schemas" / "card_template.md"

# view name -> (data path, what it is for); only views whose data exists are published. Paths
# under data/ other than data/prompts are per round: `--round-dir data/round-N` maps them there.
VIEWS = {
    "step_pairs": ("data/pairs/step", "step-level pairs `{prompt, chosen, rejected}`: MCTS siblings (highest vs "
                   "lowest Q) and Step-DPO first-error pairs"),
    "pairs": ("data/pairs/response", "response-level preference pairs `{prompt, chosen, rejected}` for DPO/IPO"),
    "kto": ("data/pairs/kto", "unpaired `{prompt, completion, label}` for KTO"),
    "prm": ("data/pairs/prm", "stepwise `{prompt, completions, labels}` for PRM training"),
    "critique_pairs": ("data/pairs/critique", "critique pairs: a correct critique vs an incorrect one"),
    "critiques": ("data/critiques", "step-level critiques (rule-based exact critic and the model critic), with "
                  "the located first wrong step and whether it is right"),
    "responses": ("data/responses", "every sampled response with steps, answer, log-probs and self-certainty"),
    "prompts": ("data/prompts", "the prompts with reference answers and splits"),
    "step_labels": ("data/labels", "step and response labels: exact verifier, Monte-Carlo rollouts (Math-Shepherd, OmegaPRM)"),
    "trees": ("data/trees", "MCTS search trees, one row per node: step, prior, visits, Q, V, reward, verified correctness"),
}
TRL_SNIPPET = '''from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

train = load_dataset("{repo}", "{view}", split="train")
model = AutoModelForCausalLM.from_pretrained("{model}")
tokenizer = AutoTokenizer.from_pretrained("{model}")
trainer = DPOTrainer(model=model, args=DPOConfig(output_dir="dpo", beta=0.1),
                     train_dataset=train, processing_class=tokenizer)
trainer.train()'''


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "n>10M"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def lineage(lock_path: str = "dvc.lock") -> list[dict]:
    if not Path(lock_path).exists():
        return []
    lock = yaml.safe_load(Path(lock_path).read_text()) or {}
    rows = []
    for stage, info in (lock.get("stages") or {}).items():
        for kind in ("deps", "outs"):
            for item in info.get(kind) or []:
                if item["path"].startswith(("data", "models")):
                    rows.append({"stage": stage, "path": item["path"], "md5": item.get("md5", "")})
    return rows


STAGE_ORDER = ["prompts", "bootstrap", "generate", "mcts", "label", "critiques", "candidates", "pairs", "train",
               "evaluate"]
QUALITY = ("mcts", "labels", "candidates", "pairs", "evaluate", "bootstrap", "critic", "critiques", "train")


HF_SPLITS = ("train", "validation", "test")


def prompt_splits(views: dict) -> dict[str, str]:
    """prompt_id -> split, from the prompts view (empty when it is not published)."""
    path = views.get("prompts", (None,))[0]
    if not path or not Path(path).exists() or not dataset_files(path):
        return {}
    t = read_table(path, columns=["prompt_id", "split"])
    return dict(zip(t.column("prompt_id").to_pylist(), t.column("split").to_pylist()))


def row_splits(table, prompt_split: dict[str, str]) -> list[str]:
    """Each row's Hugging Face split: its own `split` column, else its prompt's split, else train."""
    if "split" in table.column_names:
        return [s or "train" for s in table.column("split").to_pylist()]
    if "prompt_id" in table.column_names and prompt_split:
        return [prompt_split.get(pid, "train") for pid in table.column("prompt_id").to_pylist()]
    return ["train"] * table.num_rows


def round_views(round_dir: str | None, views: dict | None = None) -> dict:
    """VIEWS with the per-round paths moved from data/ to round_dir (data/prompts stays shared)."""
    views = views or VIEWS
    if not round_dir:
        return views
    return {name: (path if path == "data/prompts" else str(Path(round_dir) / Path(path).relative_to("data")), what)
            for name, (path, what) in views.items()}


def _metric_files(metrics_dirs) -> list[Path]:
    dirs = [metrics_dirs] if isinstance(metrics_dirs, str) else list(metrics_dirs)
    return sorted(f for d in dirs for f in Path(d).glob("*.json"))


def stage_summaries(metrics_dir="metrics") -> list[dict]:
    """The accounting of every stage that wrote <metrics dir>/<stage>.json, in pipeline order
    (one dir or several: the shared metrics/ and a round's metrics/round-N/)."""
    rows = []
    for f in _metric_files(metrics_dir):
        acc = json.loads(f.read_text()).get("accounting")
        if acc:
            rows.append({**acc, "dropped": ", ".join(f"{k}: {v}" for k, v in sorted(acc["dropped"].items())),
                         "dead": ", ".join(f"{k}: {v}" for k, v in sorted(acc["dead"].items()))})
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    return sorted(rows, key=lambda r: (order.get(r["stage"], len(order)), r["stage"]))


def build_card(out_dir: str, params_path: str = "params.yaml", metrics_dir="metrics",
               lock_path: str = "dvc.lock", views: dict | None = None) -> Path:
    """Copy the existing views into out_dir/data/<view>/ and write out_dir/README.md."""
    import datasets
    from huggingface_hub import DatasetCard, DatasetCardData

    params = load_params(params_path)
    cfg = params.card
    views = views or VIEWS
    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    (out / "data").mkdir(parents=True)
    configs, infos, view_rows, total = [], [], [], 0
    prompt_split = prompt_splits(views)
    for name, (path, purpose) in views.items():
        files = dataset_files(path) if Path(path).exists() else []
        if not files:
            continue
        table = read_table(path)
        dest = out / "data" / name
        dest.mkdir(parents=True)
        splits = row_splits(table, prompt_split)
        names = [s for s in HF_SPLITS if s in set(splits)]
        if names == ["train"]:  # one split: the stage's files as they are
            for f in files:
                shutil.copy2(f, dest / Path(f).name)
            data_files = [{"split": "train", "path": f"data/{name}/*.parquet"}]
        else:  # one Hugging Face split per prompt split (test prompts are never published as train)
            import pyarrow as pa
            import pyarrow.compute as pc
            import pyarrow.parquet as pq

            column = pa.array(splits)
            data_files = []
            for split in names:
                pq.write_table(table.filter(pc.equal(column, split)), dest / f"{split}-00000-of-00001.parquet")
                data_files.append({"split": split, "path": f"data/{name}/{split}-*.parquet"})
        features = datasets.Features.from_arrow_schema(table.schema)
        configs.append({"config_name": name, "data_files": data_files})
        infos.append({"config_name": name, "features": features._to_yaml_list(),
                      "splits": [{"name": s, "num_examples": splits.count(s)} for s in names]})
        view_rows.append({"name": name, "rows": table.num_rows, "purpose": purpose})
        total += table.num_rows
    if not view_rows:
        raise FileNotFoundError("card: no dataset views found to publish")
    card_data = DatasetCardData(
        license=cfg.license,
        language=cfg.language,
        task_categories=["text-generation"],
        tags=["preference", "dpo", "synthetic", "prefsynth", *cfg.extra_tags],
        size_categories=size_category(max(v["rows"] for v in view_rows)),
        pretty_name=cfg.pretty_name,
        configs=configs,
        dataset_info=infos,
    )
    policy_model = params.policy.model or params.bootstrap.model or "tiny arith policy (models/policy-0)"
    quality = {}
    for f in _metric_files(metrics_dir):
        if f.stem in QUALITY:
            quality[f.stem] = {k: v for k, v in json.loads(f.read_text()).items() if k != "accounting"}
    params_dict = to_dict(params)
    params_dict.pop("beam", None)
    params_dict["card"] = {k: v for k, v in params_dict["card"].items() if k != "repo_id"}
    card = DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        pretty_name=cfg.pretty_name,
        repo_id=cfg.repo_id or "<user>/<dataset>",
        source_description=("the built-in arithmetic world" if params.prompts.source == "arith"
                            else f"`{params.prompts.path}` ({params.prompts.task})"),
        policy_model=policy_model,
        backend=params.policy.backend,
        views=view_rows,
        stages=stage_summaries(metrics_dir),
        params_yaml=yaml.safe_dump(params_dict, sort_keys=False).strip(),
        quality=json.dumps(quality, indent=2, sort_keys=True) if quality else "",
        version=__version__,
        git_commit=_git("rev-parse", "HEAD") or "unknown",
        git_dirty=bool(_git("status", "--porcelain", "--untracked-files=no")),
        schema_version=SCHEMA_VERSION,
        lineage=lineage(lock_path),
        trl_snippet=TRL_SNIPPET.format(repo=cfg.repo_id or "<user>/<dataset>", view=view_rows[0]["name"],
                                       model=policy_model if "/" in policy_model else "<your-model>"),
    )
    card.save(out / "README.md")
    return out


def push(folder: str, repo_id: str, dry_run: bool, private: bool = True) -> list[str]:
    """Upload the card folder to a Hub dataset repo; the token is resolved by huggingface_hub
    (HF_TOKEN or the saved login) and never handled here."""
    files = sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())
    if dry_run:
        for f in files:
            print(f"would upload {f}")
        print(f"dry run: {len(files)} files to datasets/{repo_id}")
        return files
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="dataset",
                      commit_message=f"prefsynth {__version__}: dataset and card")
    log.info("[card] pushed %d files to datasets/%s", len(files), repo_id)
    return files


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("card", __doc__.splitlines()[0])
    add_outputs(ap, out="card")
    ap.add_argument("--metrics-dir", nargs="+", default=["metrics"],
                    help="metrics folders to summarise (the shared one and the published round's)")
    ap.add_argument("--round-dir", default=None, help="the round whose data is published, e.g. data/round-1")
    ap.add_argument("--lock", default="dvc.lock")
    ap.add_argument("--summary", default="metrics/run_summary.json")
    ap.add_argument("--dry-run", action="store_true", help="list what a push would upload; upload nothing")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    summaries = stage_summaries(args.metrics_dir)
    folder = build_card(args.out, args.params, args.metrics_dir, args.lock, views=round_views(args.round_dir))
    write_metrics(args.summary, {"stages": {s["stage"]: {k: s[k] for k in ("n_in", "n_out", "n_dropped", "n_dead",
                                                                           "balanced", "wall_s")} for s in summaries}})
    log.info("[card] wrote %s", folder / "README.md")
    if params.card.push or args.dry_run:
        if not params.card.repo_id and not args.dry_run:
            raise ValueError("params.yaml: card.repo_id is required to push (e.g. your-name/arith-prefs)")
        push(str(folder), params.card.repo_id or "<card.repo_id>", dry_run=args.dry_run or not params.card.push, private=params.card.private)
