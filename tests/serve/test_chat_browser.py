"""The chat page in a real browser (Playwright driving Debian's chromium, JavaScript off): a user
chats, gives a thumbs down with a reason, uses regenerate and picks an answer, votes in the
arena; the export holds exactly those labels, and the store names the model of each response."""

from __future__ import annotations

import json
import shutil

import pytest

def norm(text: str) -> str:
    """Text as a browser renders it in a paragraph: runs of white space are one space, and NUL
    characters (which the tiny model sometimes samples) are dropped."""
    return " ".join(text.replace("\x00", "").split())


pytestmark = pytest.mark.chromium  # without Debian's chromium: reported as not run, with the install line (conftest)


def test_browser_user_gives_feedback_that_is_exported(chromium, tiny_model_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    from rlhf.config import LabelExportConfig
    from rlhf.feedback import export
    from rlhf.feedback.store import open_store
    from rlhf.feedback.tables import Response

    from .conftest import start

    second = shutil.copytree(tiny_model_dir, tmp_path / "policy-b")
    db = str(tmp_path / "feedback.db")
    srv = start([f"alpha={tiny_model_dir}", f"beta={second}"], db=db, max_tokens=12)
    base = srv.url.removesuffix("/v1")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                        "--disable-background-networking"])
            try:
                page = browser.new_context(java_script_enabled=False).new_page()
                outside = []
                page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))
                page.goto(f"{base}/chat")
                page.select_option("select[name=model]", "alpha")
                page.fill("textarea[name=message]", "Tell me about the cat.")
                page.click("text=Send")
                first_answer = page.inner_text("#answer-0 p")
                page.fill("input[name=reason]", "it rambles")
                page.click("text=Thumbs down")
                assert "feedback saved" in page.content()

                page.fill("textarea[name=message]", "And the dog?")
                page.click("text=Send")
                original = page.inner_text("#answer-0 p")
                page.click("text=Regenerate")
                assert page.inner_text("#answer-0 p") == original
                regenerated = page.inner_text("#answer-1 p")
                page.click("#answer-1 >> text=This one is better")
                assert "Vote saved" in page.content()

                page.select_option("select[name=model]", "arena")
                page.fill("textarea[name=message]", "Once upon a time")
                page.click("text=Send")
                body = page.inner_text("body")
                assert "alpha" not in body and "beta" not in body  # names hidden until the vote
                arena = (page.inner_text("#answer-0 p"), page.inner_text("#answer-1 p"))
                page.click("#answer-0 >> text=This one is better")
                revealed = page.inner_text(".notice")
                assert "alpha" in revealed and "beta" in revealed
                assert outside == []  # no external assets
            finally:
                browser.close()
    finally:
        srv.stop()

    export.run(LabelExportConfig(db=db, project="chat-thumbs", format="binary", out=str(tmp_path / "thumbs.jsonl")))
    export.run(LabelExportConfig(db=db, project="chat-pairs", format="comparisons", out=str(tmp_path / "pairs.jsonl")))
    thumbs = [json.loads(line) for line in (tmp_path / "thumbs.jsonl").read_text().splitlines()]
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert [(norm(r["completion"]), r["label"]) for r in thumbs] == [(norm(first_answer), False)]
    assert sorted((norm(r["chosen"]), norm(r["rejected"])) for r in pairs) == sorted(
        [(norm(regenerated), norm(original)), (norm(arena[0]), norm(arena[1]))])
    with open_store(db)() as s:
        sources = {norm(r.text): r.source for r in s.query(Response).all()}
    assert sources[norm(first_answer)] == str(tiny_model_dir)
    assert sorted(sources[norm(t)] for t in arena) == sorted([str(tiny_model_dir), str(second)])
