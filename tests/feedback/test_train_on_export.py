"""The whole human-feedback round on the tiny model: `rlhf generate` writes candidates,
`rlhf label import` makes tasks, an annotator labels them in the app, `rlhf label export`
writes the files, and `rlhf rm`, `rlhf dpo` and `rlhf dpo --loss kto` train on them."""

import json

from fastapi.testclient import TestClient
from feedback_helpers import admin_login, annotator_client, answer, invite

from rlhf.cli import main
from rlhf.feedback import repo
from rlhf.feedback.app import create_app
from rlhf.feedback.store import open_store

PROMPTS = ["Once upon a time", "The dog ran", "Tom had a ball.", "The sun came out", "Sue and Tom",
           "A little cat", "It was raining", "The end of the day"]


def test_labels_from_the_app_train_rm_dpo_and_kto(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    generated, db = tmp_path / "candidates.jsonl", str(tmp_path / "feedback.db")
    assert main(["generate", "--model", str(tiny_model_dir), "--data", str(prompts), "--out", str(generated),
                 "--num-samples", "2", "--max-new-tokens", "8", "--precision", "fp32"]) == 0
    assert main(["label", "import", "--db", db, "--project", "stories", "--source", "tiny", str(generated)]) == 0

    sessions = open_store(db)
    with sessions() as s:
        token = repo.issue_admin_token(s)
    app = create_app(sessions)
    admin = TestClient(app)
    admin_login(admin, token)
    annotator = annotator_client(app, invite(admin, 1, "alice"))
    for i in range(len(PROMPTS)):
        assert answer(annotator, ("a2", "b1")[i % 2])[0].status_code == 303

    pairs, binary = tmp_path / "pairs.jsonl", tmp_path / "binary.jsonl"
    assert main(["label", "export", "--db", db, "--project", "stories", "--out", str(pairs),
                 "--strength-margin", "0.5"]) == 0
    assert main(["label", "export", "--db", db, "--project", "stories", "--format", "binary", "--out", str(binary)]) == 0
    small = ["--max-steps", "2", "--batch-size", "4", "--max-length", "48", "--precision", "fp32", "--no-progress"]
    runs = {"rm": ["rm", "--data", str(pairs)], "dpo": ["dpo", "--data", str(pairs), "--kl-prompts", "0"],
            "kto": ["dpo", "--loss", "kto", "--data", str(binary), "--kl-prompts", "0"]}
    for name, args in runs.items():
        out = tmp_path / name
        assert main([*args, "--model", str(tiny_model_dir), "--out", str(out), *small]) == 0, name
        summary = json.loads((out / "summary.json").read_text())
        assert (out / "model" / "model.safetensors").exists(), summary
