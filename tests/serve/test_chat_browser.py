"""The chat page in a real browser (Playwright driving Debian's chromium), by keyboard only: a
person opens the page unsigned (the sign-in page), signs in through the invite link an operator
made with `rlhf label invite --chat`, chats, gives a thumbs down with a reason, uses regenerate
and picks an answer, votes in the arena, all with Tab, Enter, typing and the page's shortcut
keys. The controls are real buttons and labelled fields in a sensible focus order; the export
holds exactly those labels, each by the signed-in person, and the store names each response's model."""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = pytest.mark.chromium  # without Debian's chromium: reported as not run, with the install line (conftest)

FOCUSED = """() => { const e = document.activeElement;
  return e.tagName.toLowerCase() + (e.name ? '[' + e.name + ']' : '') + (e.tagName === 'BUTTON' ? ' ' + e.innerText.trim() : ''); }"""


def norm(text: str) -> str:
    """Text as a browser renders it in a paragraph: runs of white space are one space, and NUL
    characters (which the tiny model sometimes samples) are dropped."""
    return " ".join(text.replace("\x00", "").split())


def press(page, key: str) -> None:
    """A key that submits a form: wait for the page it loads."""
    with page.expect_navigation():
        page.keyboard.press(key)


def tab_to(page, selector: str) -> None:
    """Tab forward until `selector` has the focus (a keyboard user's way to a control)."""
    for _ in range(25):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def test_keyboard_user_signs_in_by_invite_and_gives_feedback_that_is_exported(chromium, tiny_model_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    from rlhf.config import LabelExportConfig, LabelInviteConfig
    from rlhf.feedback import chat_access, export
    from rlhf.feedback.store import open_store
    from rlhf.feedback.tables import Annotator, Label, Response

    from .conftest import start

    second = shutil.copytree(tiny_model_dir, tmp_path / "policy-b")
    db = str(tmp_path / "feedback.db")
    srv = start([f"alpha={tiny_model_dir}", f"beta={second}"], db=db, max_tokens=12)
    base = srv.url.removesuffix("/v1")
    link, _ = chat_access.invite_link(LabelInviteConfig(name="alice", db=db, chat=True, url=base))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                        "--disable-background-networking"])
            try:
                page = browser.new_context().new_page()
                outside = []
                page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))
                assert page.goto(f"{base}/chat").status == 401 and "Sign in to chat" in page.inner_text("h1")
                page.goto(link)
                assert page.url == f"{base}/chat" and "Signed in as alice" in page.inner_text("header")
                assert page.evaluate("getComputedStyle(document.querySelector('header')).backgroundColor") \
                    == "rgb(36, 52, 71)"  # the labelling app's stylesheet

                # 1. the message box has the focus: type, Tab to Send, Enter; rate with a reason by Tab
                page.keyboard.type("Tell me about the cat.")
                page.keyboard.press("Tab")
                assert page.evaluate(FOCUSED) == "button Send"
                press(page, "Enter")
                first_answer = page.inner_text("#answer-0 .text")
                order = []
                for _ in range(10):
                    page.keyboard.press("Tab")
                    order.append(page.evaluate(FOCUSED))
                assert order == ["a", "a", "button Sign out", "textarea[reason]", "button[up] Thumbs up 1",
                                 "button[up] Thumbs down 2", "button Regenerate: ask for another answer r",
                                 "select[model]", "textarea[message]", "button Send"]
                for role, name in (("textbox", "Why? (optional)"), ("button", "Thumbs up"), ("button", "Thumbs down"),
                                   ("button", "Regenerate: ask for another answer"), ("combobox", "Model"),
                                   ("link", "New conversation"),
                                   ("textbox", "Your message")):  # what a screen reader announces
                    assert page.get_by_role(role, name=name).count() == 1, (role, name)
                tab_to(page, "textarea[name=reason]")  # round again from Send
                page.keyboard.type("it rambles")
                tab_to(page, "button[name=up][value='0']")
                press(page, "Enter")
                assert "feedback saved" in page.inner_text(".notice")

                # 2. another message; the shortcut r regenerates, 2 picks the second answer
                page.keyboard.type("And the dog?")
                page.keyboard.press("Tab")
                press(page, "Enter")
                original = page.inner_text("#answer-0 .text")
                press(page, "r")
                assert page.inner_text("#answer-0 .text") == original
                regenerated = page.inner_text("#answer-1 .text")
                press(page, "2")
                assert "Vote saved" in page.inner_text(".notice")

                # 3. the arena: choose it in the model list by keyboard, send, 1 picks answer A
                page.keyboard.press("Shift+Tab")
                assert page.evaluate(FOCUSED) == "select[model]"
                page.keyboard.press("End")
                assert page.evaluate("document.activeElement.value") == "arena"
                page.keyboard.press("Tab")
                page.keyboard.type("Once upon a time")
                page.keyboard.press("Tab")
                press(page, "Enter")
                body = page.inner_text("body")
                assert "alpha" not in body and "beta" not in body  # names hidden until the vote
                arena = (page.inner_text("#answer-0 .text"), page.inner_text("#answer-1 .text"))
                press(page, "1")
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
        labels = s.query(Label).all()
        assert [lab.reason for lab in labels if lab.outcome == "thumbs"] == ["it rambles"]
        assert {s.get(Annotator, lab.annotator_id).name for lab in labels} == {"alice"} and len(labels) == 3
    assert sources[norm(first_answer)] == str(tiny_model_dir)
    assert sorted(sources[norm(t)] for t in arena) == sorted([str(tiny_model_dir), str(second)])
