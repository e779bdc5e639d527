"""The whole human-feedback round on the tiny model: `rlhf generate` writes candidates,
`rlhf label import` makes tasks, an annotator labels them in the app, `rlhf label export`
writes the files, and `rlhf rm`, `rlhf dpo` and `rlhf dpo --loss kto` train on them."""

import html
import json
import re

import yaml
from fastapi.testclient import TestClient
from feedback_helpers import admin_login, annotator_client, answer, invite

from rlhf.cli import main
from rlhf.feedback import repo
from rlhf.feedback.app import create_app
from rlhf.feedback.store import open_store

PROMPTS = ["Once upon a time", "The dog ran", "Tom had a ball.", "The sun came out", "Sue and Tom",
           "A little cat", "It was raining", "The end of the day"]


def shown_pair(page: str) -> tuple[str, str, str]:
    """(prompt, response A, response B) as the annotate page shows them."""
    prompt = re.search(r'<section class="prompt">.*?<div class="text">(.*?)</div>', page, re.S).group(1)
    a, b = re.findall(r'<article class="response"[^>]*>\s*<h3>[AB]</h3>\s*<div class="text">(.*?)</div>', page, re.S)
    return html.unescape(prompt), html.unescape(a), html.unescape(b)


def in_order(rows):
    return sorted(rows, key=lambda row: json.dumps(row, sort_keys=True))


def rows_trained_on(run_dir):
    """The rows of the data file that a run's config.yaml names."""
    data = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]
    with open(data, encoding="utf-8") as f:
        return in_order(json.loads(line) for line in f)


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
    comparisons, thumbs = [], []  # the clicks below, as the exported files should hold them
    for i in range(len(PROMPTS)):
        page, choice = annotator.get("/annotate").text, ("a2", "b1")[i % 2]  # A is better / B is slightly better
        response, task_id, _ = answer(annotator, choice)
        assert response.status_code == 303 and f'action="/annotate/{task_id}"' in page
        prompt, a, b = shown_pair(page)
        chosen, rejected = (a, b) if choice == "a2" else (b, a)
        margin = 0.5 if choice == "a2" else 0.0  # --strength-margin 0.5 * (strength - 1): better = 2, slightly = 1
        comparisons.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "margin": margin})
        thumbs += [{"prompt": prompt, "completion": chosen, "label": True},
                   {"prompt": prompt, "completion": rejected, "label": False}]
    assert sorted(row["prompt"] for row in comparisons) == sorted(PROMPTS)

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

    assert rows_trained_on(tmp_path / "rm") == rows_trained_on(tmp_path / "dpo") == in_order(comparisons)
    assert rows_trained_on(tmp_path / "kto") == in_order(thumbs)
