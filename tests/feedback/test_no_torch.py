"""The feedback package runs with the web dependencies alone: with torch, rlhf.train and
rlhf.models made unimportable, the app serves a whole labelling round and the import and
export commands run, called directly and through `rlhf.cli`."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import rlhf.feedback

FORBIDDEN = ("torch", "rlhf.train", "rlhf.models", "rlhf.rollout", "rlhf.eval", "rlhf.algos", "transformers")

SCRIPT = textwrap.dedent('''
    import importlib.abc, sys, tempfile, json
    from pathlib import Path

    BLOCKED = ["torch", "rlhf.train", "rlhf.models"]

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ModuleNotFoundError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, Block())
    sys.path.insert(0, sys.argv[1])
    from fastapi.testclient import TestClient
    from feedback_helpers import admin_login, annotator_client, answer, candidates, create_project, invite
    from rlhf.config.feedback import LabelExportConfig, LabelImportConfig
    from rlhf.feedback import export, importer, repo
    from rlhf.feedback.app import create_app
    from rlhf.feedback.store import open_store

    tmp = Path(tempfile.mkdtemp())
    sessions = open_store(str(tmp / "f.db"))
    with sessions() as s:
        token = repo.issue_admin_token(s)
    app = create_app(sessions)
    admin = TestClient(app)
    admin_login(admin, token)
    project = create_project(admin, candidates(tmp, n=2))
    client = annotator_client(app, invite(admin, project, "a"))
    assert answer(client, "a2")[0].status_code == 303
    assert b"Nothing left" not in client.get("/annotate").content
    assert admin.get(f"/admin/projects/{project}/dashboard").status_code == 200
    assert admin.get(f"/admin/projects/{project}/plots/leaderboard.png").status_code == 200
    db = str(tmp / "f.db")
    assert "2 tasks" in importer.run(LabelImportConfig(file=str(candidates(tmp, n=2)), db=db, project="direct"))
    assert "1 rows" in export.run(LabelExportConfig(db=db, project="p", out=str(tmp / "o.jsonl")))
    loaded = [m for m in sys.modules if m.split(".")[0] == "torch" or m.startswith(("rlhf.train", "rlhf.models"))]
    assert not loaded, loaded

    from rlhf.cli import main
    assert main(["label", "import", "--db", db, "--project", "cli", str(candidates(tmp, n=2))]) == 0
    assert main(["label", "export", "--db", db, "--project", "p", "--out", str(tmp / "o.jsonl")]) == 0
    loaded = [m for m in sys.modules if m.split(".")[0] == "torch" or m.startswith(("rlhf.train", "rlhf.models"))]
    assert not loaded, loaded
    print("OK without torch")
''')


def test_app_and_commands_run_with_torch_blocked():
    helpers = Path(__file__).parent
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(helpers)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK without torch" in result.stdout


def test_feedback_modules_import_nothing_heavy():
    for path in Path(rlhf.feedback.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"


def test_files_stay_small():
    for path in Path(rlhf.feedback.__file__).parent.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name
