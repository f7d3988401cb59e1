"""The package map holds: imports point one way (common <- dataloader, models <- engine <- pseudo, ensembling;
extraction, teachers and corpora beside them), no package imports a command-line script, and the teachers
import without torch."""

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what each package may import (config.py, the settings, any of them may)
ALLOWED = {
    "common": set(),
    "dataloader": {"common"},
    "models": {"common"},
    "engine": {"common", "dataloader", "models"},
    "pseudo": {"common", "dataloader", "models", "engine", "teachers"},
    "ensembling": {"common", "dataloader", "engine", "teachers"},
    "teachers": {"common", "dataloader", "extraction"},
    "extraction": {"common", "dataloader"},
    "corpora": {"common", "dataloader", "extraction"},
    "finetuning": {"common", "dataloader", "extraction"},
}
SCRIPTS = {os.path.splitext(f)[0] for d in ("", "preprocess", "bench") for f in os.listdir(os.path.join(REPO, d))
           if f.endswith(".py")} - {"config", "_paths"}


def imports(path):
    """Top-level module names a file imports (at any depth of the file: lazy imports count)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def package_graph():
    graph, script_imports = {}, []
    for pkg in ALLOWED:
        deps = set()
        for root, _, files in os.walk(os.path.join(REPO, pkg)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(root, f)
                    found = imports(path)
                    deps |= {m for m in found if m in ALLOWED and m != pkg}
                    script_imports += [(os.path.relpath(path, REPO), m) for m in found & SCRIPTS]
        graph[pkg] = deps
    return graph, script_imports


def test_imports_point_one_way_and_no_package_imports_a_script():
    graph, script_imports = package_graph()
    assert not script_imports, f"packages import command-line scripts: {script_imports}"
    wrong = {p: sorted(d - ALLOWED[p]) for p, d in graph.items() if d - ALLOWED[p]}
    assert not wrong, f"imports against the package map: {wrong}"
    # and so no cycle: a topological order exists
    left = {p: set(d) for p, d in graph.items()}
    while left:
        ready = [p for p, d in left.items() if not d & set(left)]
        assert ready, f"import cycle among {sorted(left)}"
        for p in ready:
            del left[p]


def test_no_library_or_script_reaches_into_train_py_or_loads_scripts_by_path():
    offenders = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in (".venv", ".git", "tests", "features", "saved", "__pycache__")]
        for f in files:
            if f.endswith(".py"):
                text = open(os.path.join(root, f), encoding="utf-8").read()
                if "from train import" in text or "load_script" in text:
                    offenders.append(os.path.relpath(os.path.join(root, f), REPO))
    assert not offenders


def test_teachers_import_without_torch():
    code = ("import sys\nimport teachers.client, teachers.parse, teachers.prompt, teachers.records\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
