"""dvc.yaml deps cover every package file a stage runs (derived from the imports, not hand-kept)."""

import importlib.util
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("stage_deps", ROOT / "scripts" / "stage_deps.py")
stage_deps = importlib.util.module_from_spec(spec)
sys.modules["stage_deps"] = stage_deps
spec.loader.exec_module(stage_deps)


def test_every_stage_depends_on_every_module_it_imports():
    missing = stage_deps.missing_deps()
    assert set(missing) >= {"prompts", "bootstrap", "generate", "mcts", "label", "candidates", "pairs", "train",
                            "evaluate", "card"}
    assert not any(missing.values()), {k: v for k, v in missing.items() if v}


def test_ids_and_lazily_imported_modules_are_deps():
    deps = {name: st["deps"] for name, st in stage_deps.stages().items()}
    for name, d in deps.items():  # content ids and seeds: every stage
        assert stage_deps.covered("prefsynth/ids.py", d), name
    # imported inside functions only: still run by the stage
    assert stage_deps.covered("prefsynth/transforms/upo/scoring.py", deps["pairs"])
    assert stage_deps.covered("prefsynth/transforms/pairs.py", deps["pairs"])  # truly_better
    assert not stage_deps.covered("prefsynth/transforms/upo/scoring.py", deps["prompts"])  # and no more than that


def test_dvc_yaml_deps_are_exactly_the_derived_ones(tmp_path):
    copy = tmp_path / "dvc.yaml"
    shutil.copy(ROOT / "dvc.yaml", copy)
    assert stage_deps.write_deps(copy) is False, "run: python scripts/stage_deps.py --write"


def test_a_new_import_is_caught(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "prefsynth", root / "prefsynth", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    (root / "prefsynth" / "newhelper.py").write_text("X = 1\n")
    ev = root / "prefsynth" / "pipelines" / "evaluate.py"
    ev.write_text(ev.read_text().replace("def main(argv", "def _uses_helper():\n    from prefsynth import newhelper\n"
                                         "    return newhelper.X\n\n\ndef main(argv", 1))
    missing = stage_deps.missing_deps(root / "dvc.yaml", root)
    assert missing["evaluate"] == ["prefsynth/newhelper.py"]
    assert missing["prompts"] == []
    assert stage_deps.write_deps(root / "dvc.yaml", root) is True
    assert stage_deps.missing_deps(root / "dvc.yaml", root)["evaluate"] == []


def test_byte_compiled_files_are_not_part_of_any_dependency_hash():
    """A directory dep (prefsynth/tasks, prefsynth/config, ...) hashes every file DVC does not ignore:
    without the .dvcignore rule the __pycache__ a test run leaves behind made dvc.lock differ between
    a working copy and a fresh clone, and `dvc repro` there retrained everything."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        ignored = repo.dvcignore
        assert ignored.is_ignored_file(str(ROOT / "prefsynth/tasks/__pycache__/base.cpython-311.pyc"))
        assert ignored.is_ignored_file(str(ROOT / "prefsynth/config/stray.pyc"))
        assert not ignored.is_ignored_file(str(ROOT / "prefsynth/tasks/base.py"))
        assert not ignored.is_ignored_file(str(ROOT / "prefsynth/templates/p_true.txt"))
