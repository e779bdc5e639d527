"""The app in a real browser (Playwright driving Debian's chromium): an admin, with JavaScript
off, creates a project from a `rlhf generate` file and invites two annotators; each signs in
by link and labels with the keyboard; one undoes a label and answers again. The export then
trains a reward model (`rlhf rm`) and a policy (`rlhf dpo`)."""

import pytest
from feedback_helpers import write_jsonl

from rlhf.cli import main
from rlhf.data.formats import read_comparisons
from rlhf.feedback.tables import Label

pytestmark = pytest.mark.chromium  # without Debian's chromium: reported as not run, with the install line (conftest)


def _label_with_keys(page, keys: str) -> None:
    for key in keys:
        with page.expect_navigation():
            page.keyboard.press(key)


def test_admin_invites_two_annotators_who_label_with_the_keyboard(chromium, server, admin_token, sessions, tmp_path,
                                                                   tiny_model_dir):
    from playwright.sync_api import sync_playwright

    generated = write_jsonl(tmp_path / "candidates.jsonl",  # what `rlhf generate` writes without --label
                            [{"prompt": f"Tell story {i}", "responses": [f"story {i} take {j}" for j in range(2)]}
                             for i in range(3)])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                    "--disable-background-networking"])
        try:
            admin = browser.new_context(java_script_enabled=False).new_page()  # admin pages need no script
            requests = []
            admin.on("request", lambda r: requests.append(r.url))
            admin.goto(f"{server}/admin/login")
            admin.fill("input[name=token]", admin_token)
            admin.click("button[type=submit]")
            admin.fill("#new-project input[name=name]", "stories")
            admin.fill("#new-project input[name=overlap]", "2")
            admin.set_input_files("#new-project input[name=file]", str(generated))
            admin.click("#new-project button[type=submit]")
            assert "3 tasks" in admin.content()
            links = {}
            for name in ("alice", "bob"):
                admin.fill("#invite input[name=name]", name)
                admin.click("#invite button[type=submit]")
                links[name] = admin.input_value("#invite-link")
                admin.go_back()

            pages = {}
            for name, link in links.items():
                pages[name] = browser.new_context().new_page()
                pages[name].goto(link)
                assert "0 of 3 done" in pages[name].inner_text("#progress-text")
            _label_with_keys(pages["alice"], "123")  # A much better, A better, A slightly better
            _label_with_keys(pages["bob"], "77")  # B much better, twice
            _label_with_keys(pages["bob"], "u")  # undo: back to that task
            assert "1 of 3 done" in pages["bob"].inner_text("#progress-text")
            pages["bob"].fill("textarea[name=reason]", "typed 1234 here")
            pages["bob"].keyboard.type("5")  # keys typed into the reason box are text, not answers
            pages["bob"].click("h2")  # leave the text box
            _label_with_keys(pages["bob"], "48")  # tie, then both bad on the last one
            assert "Nothing left to label" in pages["alice"].content() and "Nothing left to label" in pages["bob"].content()

            admin.goto(f"{server}/admin/projects/1/dashboard")
            assert "alice" in admin.inner_text("#kappa")
            export = admin.request.get(f"{server}/admin/projects/1/export?format=comparisons&rule=every")
            (tmp_path / "export.jsonl").write_bytes(export.body())
        finally:
            browser.close()
    assert all(url.startswith(server) for url in requests), "the app must not touch the network"
    with sessions() as s:
        labels = s.query(Label).order_by(Label.id).all()
    alice = [(l.outcome, l.strength) for l in labels if l.annotator_id == 1]
    bob = [(l.outcome, l.strength, l.undone_at is not None, l.reason) for l in labels if l.annotator_id == 2]
    assert alice == [("win", 3), ("win", 2), ("win", 1)]
    assert bob == [("win", 3, False, ""), ("win", 3, True, ""), ("tie", None, False, "typed 1234 here5"),
                   ("both_bad", None, False, "")]
    assert len(read_comparisons(tmp_path / "export.jsonl")) == 4  # every win; tie and both-bad give none
    small = ["--model", str(tiny_model_dir), "--data", str(tmp_path / "export.jsonl"), "--max-steps", "1",
             "--batch-size", "4", "--max-length", "48", "--precision", "fp32", "--no-progress"]
    assert main(["rm", *small, "--out", str(tmp_path / "rm")]) == 0
    assert main(["dpo", *small, "--kl-prompts", "0", "--out", str(tmp_path / "dpo")]) == 0
    assert (tmp_path / "rm" / "model").is_dir() and (tmp_path / "dpo" / "model").is_dir()
