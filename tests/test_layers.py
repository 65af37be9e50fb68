"""Layers point down: no import cycle, the library's sweep layer does not reach up to the job seam.

Read statically with ``ast`` (every import, also those inside functions), so a cycle that only a
lazy import closes is found too, and nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nemo_rl_hpo", "hydra_plugins")


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in mods)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            for a in node.names:
                full = f"{base}.{a.name}"
                if full in mods:
                    out.add(full)
                elif base in mods:
                    out.add(base)
    out.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_cycle_finder_finds_a_cycle_closed_by_a_lazy_import() -> None:
    # Rule: the check itself can fail: a -> b -> c -> a is one cycle, d outside it.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_packages() -> None:
    # Rule: every module can be imported on its own, whatever was imported before it.
    assert _cycles(_graph()) == []


def test_the_sweep_layer_does_not_import_the_job_seam() -> None:
    # Rule: nemo_rl_hpo.trial is what a training script imports; the sweep library below it
    # takes the trial context from nemo_rl_hpo.sweep.context instead.
    graph = _graph()
    upward = {m: sorted(d) for m, d in graph.items() if m.startswith("nemo_rl_hpo.sweep")}
    assert {m: d for m, d in upward.items() if "nemo_rl_hpo.trial" in d} == {}


def test_the_library_imports_nothing_from_the_hydra_plugin() -> None:
    # Rule: hydra_plugins builds on nemo_rl_hpo, never the other way round.
    graph = _graph()
    up = {
        m: sorted(d for d in deps if d.startswith("hydra_plugins"))
        for m, deps in graph.items()
        if m.startswith("nemo_rl_hpo")
    }
    assert {m: d for m, d in up.items() if d} == {}


def test_the_hydra_free_library_names_its_own_parameters() -> None:
    # Rule: sweep/, search/ and pbt/ word their errors with the library's parameter names; the
    # Hydra layer says which hydra.sweeper.* key each came from (nemo_rl_hpo/errors.named).
    mentions = [
        f"{f.relative_to(ROOT)}:{i}"
        for pkg in ("sweep", "search", "pbt")
        for f in sorted((ROOT / "nemo_rl_hpo" / pkg).rglob("*.py"))
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if "hydra.sweeper" in line
    ]
    assert mentions == []
