"""Record what the NeMo RL presets rely on in a NeMo RL checkout: config keys and types, scripts.

    python examples/command/nemo_rl_config_schema.py ~/RL               # writes the fixture
    git diff tests/fixtures/nemo_rl_configs.json                        # what NeMo RL changed
    python -m pytest tests/test_nemo_rl_fidelity.py                     # do the presets still fit?

Reads ``<checkout>/examples/configs/{grpo_math_1B,sft,dpo}.yaml`` with the checkout's own loader
(``nemo_rl/utils/config.py``'s ``load_config``: ``defaults:`` inheritance and all, loaded from
its file, so none of NeMo RL's heavy imports are needed) and writes every key (dotted, list items
by index, as overrides address them) with its type: ``int``, ``float``, ``bool``, ``str``,
``null``, ``missing`` (``???``), ``dict``, ``list``, or ``interpolation: ${...}``; and, read with
``ast`` (nothing imported), the annotation NeMo RL's ``MasterConfig`` classes give a key where
they give one (``dpo.sft_loss_weight: float`` although the YAML writes ``0``). Also recorded:
the resolvers the loader registers, the ``examples/run_*.py`` scripts, and the variables
``ray.sub`` reads from the environment. The commit is ``git rev-parse HEAD`` of the checkout, or
``--commit`` for an exported tree. ``tests/test_nemo_rl_fidelity.py`` checks each preset's
rendered driver line against this file, so updating to a newer NeMo RL is this one command and
a review of the diff.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

# each config with the module whose MasterConfig (pydantic) validates it in the run script
CONFIGS = {
    "examples/configs/grpo_math_1B.yaml": "nemo_rl/algorithms/grpo.py",
    "examples/configs/sft.yaml": "nemo_rl/algorithms/sft.py",
    "examples/configs/dpo.yaml": "nemo_rl/algorithms/dpo.py",
}
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "nemo_rl_configs.json"
# ray.sub's `NAME=${NAME:-default}` / `NAME=$NAME` lines: what it takes from the environment
_RAY_SUB_VARIABLE = re.compile(r"^\s*([A-Z][A-Z0-9_]*)=\$\{?\1\b", re.M)
_RESOLVER = re.compile(r"register_new_resolver\(\s*[\"'](\w+)[\"']")


def _loader(checkout: Path) -> Any:
    path = checkout / "nemo_rl" / "utils" / "config.py"
    if not path.is_file():
        sys.exit(f"{path} not found: give the root of a NeMo RL checkout (NVIDIA-NeMo/RL).")
    spec = importlib.util.spec_from_file_location("nemo_rl_config_of_checkout", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _type(node: Any) -> str:
    if node is None:
        return "null"
    if isinstance(node, bool):
        return "bool"
    if isinstance(node, int):
        return "int"
    if isinstance(node, float):
        return "float"
    if isinstance(node, str):
        if node == "???":
            return "missing"
        return f"interpolation: {node}" if "${" in node else "str"
    if isinstance(node, dict):
        return "dict"
    if isinstance(node, list):
        return "list"
    return type(node).__name__


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """Every dotted key below ``node`` (list items by index) with its type."""
    out: dict[str, str] = {}
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        dotted = f"{prefix}{key}"
        out[dotted] = _type(value)
        if isinstance(value, (dict, list)):
            out.update(flatten(value, dotted + "."))
    return out


def _classes(checkout: Path) -> dict[str, dict[str, ast.expr]]:
    """Annotated fields of every class under ``nemo_rl/`` (pydantic models, TypedDicts) by
    class name; a name defined twice is left out (which one a module means is not known)."""
    found: dict[str, dict[str, ast.expr]] = {}
    twice: set[str] = set()
    for path in sorted((checkout / "nemo_rl").rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                fields = {
                    item.target.id: item.annotation
                    for item in node.body
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                }
                if node.name in found:
                    twice.add(node.name)
                found[node.name] = fields
    return {name: fields for name, fields in found.items() if name not in twice}


def _unwrap(annotation: ast.expr) -> ast.expr:
    """``Optional[X]``, ``X | None``, ``NotRequired[X]`` -> ``X``."""
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name):
        if annotation.value.id in ("Optional", "NotRequired", "Required"):
            return _unwrap(annotation.slice)
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        sides = [annotation.left, annotation.right]
        rest = [a for a in sides if not (isinstance(a, ast.Constant) and a.value is None)]
        if len(rest) == 1:
            return _unwrap(rest[0])
    return annotation


def declared(
    classes: dict[str, dict[str, ast.expr]], name: str, prefix: str = ""
) -> dict[str, str]:
    """Dotted key -> annotation as written, from ``name``'s fields down through nested config
    classes (the types NeMo RL's ``MasterConfig`` validates the loaded YAML against)."""
    out: dict[str, str] = {}
    for field, annotation in classes.get(name, {}).items():
        key = f"{prefix}{field}"
        out[key] = ast.unparse(annotation)
        inner = _unwrap(annotation)
        if isinstance(inner, ast.Name) and inner.id in classes and inner.id != name:
            out.update(declared(classes, inner.id, key + "."))
    return out


def schema(checkout: Path, commit: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    loader = _loader(checkout)
    classes = _classes(checkout)
    configs, annotations = {}, {}
    for rel, module in CONFIGS.items():
        cfg = loader.load_config(checkout / rel)
        keys = flatten(OmegaConf.to_container(cfg, resolve=False))
        configs[rel] = dict(sorted(keys.items()))
        tree = ast.parse((checkout / module).read_text(encoding="utf-8"))
        master = next(
            n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MasterConfig"
        )
        fields = {
            i.target.id: i.annotation
            for i in master.body
            if isinstance(i, ast.AnnAssign) and isinstance(i.target, ast.Name)
        }
        types: dict[str, str] = {}
        for section, annotation in fields.items():
            inner = _unwrap(annotation)
            if isinstance(inner, ast.Name):
                types.update(declared(classes, inner.id, section + "."))
        annotations[rel] = {k: v for k, v in sorted(types.items()) if k in keys}
    ray_sub = (checkout / "ray.sub").read_text()
    config_py = (checkout / "nemo_rl" / "utils" / "config.py").read_text()
    return {
        "nemo_rl_commit": commit,
        "generated_by": "python examples/command/nemo_rl_config_schema.py <NeMo RL checkout>",
        "scripts": sorted(
            p.relative_to(checkout).as_posix() for p in checkout.glob("examples/run_*.py")
        ),
        "resolvers": sorted(set(_RESOLVER.findall(config_py))),
        "ray_sub_variables": sorted(set(_RAY_SUB_VARIABLE.findall(ray_sub))),
        "configs": configs,
        # the keys' annotations in NeMo RL's config classes (MasterConfig of the algorithm's
        # module, followed into nested classes), where there is one: a YAML literal `0` of a
        # field declared `float` is a float
        "annotations": annotations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkout", type=Path, help="root of a NeMo RL checkout")
    parser.add_argument("--commit", help="the checkout's commit (default: git rev-parse HEAD)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    commit = args.commit
    if commit is None:
        done = subprocess.run(
            ["git", "-C", str(args.checkout), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        if done.returncode != 0:
            sys.exit(f"{args.checkout} is not a git checkout: give --commit <sha>.")
        commit = done.stdout.strip()
    data = schema(args.checkout.resolve(), commit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    keys = sum(len(v) for v in data["configs"].values())
    print(f"wrote {args.out}: {keys} keys of {len(CONFIGS)} configs at NeMo RL {commit[:12]}")


if __name__ == "__main__":
    main()
