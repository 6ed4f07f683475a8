"""Which files of the `prefsynth` package each dvc.yaml stage runs, and whether its deps cover them.

A stage's `cmd` is `prefsynth <stage> ...`: prefsynth/cli.py imports the stage's module
(prefsynth.cli.STAGES), which imports others, at module level or inside functions (both run
when the stage runs). The closure is derived from the source with `ast` (no import executes):
every `import prefsynth.x` / `from prefsynth.x import y` / `from . import y` inside the package,
plus each module's parent `__init__.py`, plus the data files a module reads beside it
(templates, the card template). A dvc.yaml dep covers a file when it is the file or a folder
above it.

    python scripts/stage_deps.py            # every stage: missing deps (exit 1 when any)
    python scripts/stage_deps.py --print    # every stage's derived dep list
    python scripts/stage_deps.py --write    # rewrite the prefsynth/ deps of every stage in dvc.yaml
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "prefsynth"
# non-Python files a module reads from beside it (module -> files or folders, relative to the repo)
RESOURCES = {
    "prefsynth/transforms/judges/templates.py": ["prefsynth/templates"],
    "prefsynth/transforms/critiques.py": ["prefsynth/templates/critique.txt", "prefsynth/templates/critique_chat.txt"],
    "prefsynth/pipelines/card.py": ["prefsynth/schemas/card_template.md"],
}


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of module `name` (a.b.c) inside the repo, or None when it is not ours."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = root / Path(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every prefsynth module `path` imports anywhere in its body (a `from m import x` also names m.x
    in case x is a submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = _module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return {m for m in out if module_file(m, root) is not None}


def closure(module: str, root: Path = ROOT) -> list[str]:
    """Repo-relative files that running `module` executes or reads: itself, what it imports
    (transitively), their packages' __init__.py files and the resources they read."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__ first
            f = module_file(".".join(parts[:i]), root)
            if f is not None and f not in seen:
                seen.add(f)
                todo.extend(imported_modules(f, root))
    files = {str(f.relative_to(root)) for f in seen}
    for f in list(files):
        files.update(RESOURCES.get(f, []))
    return sorted(files)


def stage_module(cmd: str) -> str | None:
    """The module a stage's `cmd` runs (`prefsynth <stage> ...`), via prefsynth.cli.STAGES."""
    words = cmd.split()
    if len(words) < 2 or words[0] != PACKAGE:
        return None
    sys.path.insert(0, str(ROOT))
    from prefsynth.cli import STAGES

    return STAGES.get(words[1])


def _folder_files(folder: Path, root: Path) -> set[str]:
    return {str(f.relative_to(root)) for f in folder.rglob("*")
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"}


def compress(files: list[str], root: Path = ROOT) -> list[str]:
    """The same set of files, a folder named instead of its files where every file in it is needed
    (a folder dep covers its files; never a folder with a file the stage does not use)."""
    want = set()
    for f in files:
        p = root / f
        want |= _folder_files(p, root) if p.is_dir() else {f}
    out = set(want)
    folders = sorted({str(Path(f).parent) for f in want} - {PACKAGE}, key=lambda d: -d.count("/"))
    for d in folders:
        inside = _folder_files(root / d, root)
        if inside and inside <= want:
            out = {f for f in out if not covered(f, [d])} | {d}
    return sorted(out)


def stage_package_deps(module: str, root: Path = ROOT) -> list[str]:
    """What a stage running `module` must depend on in the package: the CLI and the module's closures."""
    return compress(sorted(set(closure("prefsynth.cli", root)) | set(closure(module, root))), root)


def write_deps(dvc_yaml: Path = ROOT / "dvc.yaml", root: Path = ROOT) -> bool:
    """Replace each stage's `- prefsynth/...` deps in dvc.yaml by the derived ones (text edit: the
    comments and the other deps stay). True when the file changed."""
    lines = dvc_yaml.read_text().splitlines(keepends=True)
    spec = stages(dvc_yaml)
    out, stage, in_deps, written = [], None, False, False
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if indent == 2 and stripped.endswith(":") and not stripped.startswith("#"):
            stage, in_deps = stripped[:-1], False
        elif stripped == "deps:":
            in_deps, written = True, False
        elif in_deps and stripped and not stripped.startswith("- ") and not stripped.startswith("#"):
            in_deps = False
        if in_deps and stripped.startswith(f"- {PACKAGE}/"):
            module = stage_module(spec[stage]["cmd"]) if stage in spec else None
            if module is None:
                out.append(line)
                continue
            if not written:
                pad = line[:indent]
                out.extend(f"{pad}- {d}\n" for d in stage_package_deps(module, root))
                written = True
            continue
        out.append(line)
    text = "".join(out)
    changed = text != dvc_yaml.read_text()
    dvc_yaml.write_text(text)
    return changed


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def stages(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, dict]:
    """Stage name -> {cmd, deps} (a foreach stage once, with its template)."""
    spec = yaml.safe_load(dvc_yaml.read_text())["stages"]
    out = {}
    for name, st in spec.items():
        st = st.get("do", st)
        out[name] = {"cmd": " ".join(str(st["cmd"]).split()), "deps": [str(d) for d in st.get("deps", [])]}
    return out


def missing_deps(dvc_yaml: Path = ROOT / "dvc.yaml", root: Path = ROOT) -> dict[str, list[str]]:
    """Stage -> package files it runs that its deps do not cover (empty lists when all are)."""
    out = {}
    for name, st in stages(dvc_yaml).items():
        module = stage_module(st["cmd"])
        if module is None:
            continue
        files = closure("prefsynth.cli", root) + closure(module, root)
        out[name] = sorted({f for f in files if not covered(f, st["deps"])})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--print", action="store_true", help="print each stage's derived package deps")
    ap.add_argument("--write", action="store_true", help="rewrite the package deps of every stage in dvc.yaml")
    args = ap.parse_args()
    if args.print:
        for name, st in stages().items():
            module = stage_module(st["cmd"])
            if module:
                print(f"{name}:")
                for f in stage_package_deps(module):
                    print(f"  - {f}")
        return
    if args.write:
        print("dvc.yaml " + ("updated" if write_deps() else "already up to date"))
    bad = {k: v for k, v in missing_deps().items() if v}
    for name, files in bad.items():
        print(f"{name}: not in deps: {', '.join(files)}")
    if bad:
        sys.exit(1)
    print("every stage's deps cover the package files it runs")


if __name__ == "__main__":
    main()
