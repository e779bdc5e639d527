"""algos/ is pure math: it may import only torch and the standard modules named in DESIGN.md."""

import ast
from pathlib import Path

import rlhf.algos

ALGOS_DIR = Path(rlhf.algos.__file__).parent
ALLOWED_ROOTS = {"torch", "math", "typing", "dataclasses", "rlhf"}


def test_algos_imports_only_torch():
    for path in ALGOS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in ALLOWED_ROOTS, f"{path.name} imports {name}"
                if name.startswith("rlhf"):
                    assert name.startswith("rlhf.algos"), f"{path.name} imports {name}"


def test_files_stay_small():
    for path in ALGOS_DIR.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 300, path.name


def test_public_api_is_exported():
    for name in rlhf.algos.__all__:
        assert hasattr(rlhf.algos, name), name
    assert set(rlhf.algos.LOSSES) == {"dpo", "cdpo", "ipo", "simpo", "orpo", "kto"}
