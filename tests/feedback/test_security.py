"""Bad input and bad callers: payloads render as text, requests without the right token or
CSRF token get a 4xx and change nothing, oversized bodies get 413, tokens stay out of logs."""

import logging

import pytest
from fastapi.testclient import TestClient
from feedback_helpers import (
    XSS,
    admin_login,
    annotator_client,
    answer,
    candidates,
    create_project,
    csrf_of,
    form_values,
    invite,
    write_jsonl,
)

from rlhf.feedback.tables import Annotator, Label, Project

RAW = ("<script>alert", "<img src=x onerror")


def _labels(sessions) -> int:
    with sessions() as s:
        return s.query(Label).count()


def test_script_and_img_payloads_render_as_text(app, admin, tmp_path):
    rows = [{"prompt": [{"role": "user", "content": XSS}], "responses": [XSS, "fine " + XSS], "models": [XSS, "m2"]}]
    project_id = create_project(admin, write_jsonl(tmp_path / "xss.jsonl", rows), name=XSS, overlap=2)
    client = annotator_client(app, invite(admin, project_id, XSS))
    pages = [client.get("/annotate").text]
    answer(client, "a3")
    pages += [admin.get("/admin").text, admin.get(f"/admin/projects/{project_id}").text,
              admin.get(f"/admin/projects/{project_id}/dashboard").text]
    for page in pages:
        assert not any(raw in page for raw in RAW)
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page or "&lt;script&gt;" in page
    assert pages[0].count("&lt;img src=x onerror=") >= 3  # the prompt and both responses (and names), as text
    assert "script-src 'self'" in client.get("/annotate").headers["content-security-policy"]


@pytest.fixture
def two_projects(app, admin, tmp_path):
    """Project 1 with annotators alice and bob, project 2 with mallory; alice has answered once."""
    first = create_project(admin, candidates(tmp_path, n=3), name="one", overlap=2)
    second = create_project(admin, candidates(tmp_path, n=3), name="two")
    alice = annotator_client(app, invite(admin, first, "alice"))
    bob = annotator_client(app, invite(admin, first, "bob"))
    mallory_token = invite(admin, second, "mallory")
    answer(alice, "a3")
    return alice, bob, mallory_token


def test_requests_without_a_token_change_nothing(app, sessions, two_projects, admin_token):
    alice, _, _ = two_projects
    before = _labels(sessions)
    page = alice.get("/annotate").text
    task_id = page.split('action="/annotate/')[1].split('"')[0]
    anonymous = TestClient(app)
    assert anonymous.post(f"/annotate/{task_id}", data={**form_values(page), "choice": "a1"}).status_code == 401
    assert anonymous.post("/undo", data={"csrf": csrf_of(page)}).status_code == 401
    assert anonymous.get("/annotate").status_code == 401
    assert anonymous.get("/join/not-a-real-token").status_code == 403
    for path in ("/admin", "/admin/projects/1", "/admin/projects/1/dashboard", "/admin/projects/1/export"):
        assert anonymous.get(path).status_code == 401
    assert anonymous.post("/admin/projects/1/invite", data={"name": "eve", "csrf": "x"}).status_code == 401
    assert admin_login(anonymous, "guess").status_code == 401
    # the sign-in form itself carries a CSRF token: a post without it (another site's form) is refused
    assert TestClient(app).post("/admin/login", data={"token": admin_token}).status_code == 403
    forged = TestClient(app)
    forged.get("/admin/login")
    assert forged.post("/admin/login", data={"token": admin_token, "csrf": "forged"}).status_code == 403
    with sessions() as s:
        assert _labels(sessions) == before and s.query(Annotator).filter_by(name="eve").count() == 0


def test_another_annotators_token_reaches_nothing_of_theirs(app, sessions, two_projects):
    alice, bob, mallory_token = two_projects
    page = bob.get("/annotate").text
    task_id = page.split('action="/annotate/')[1].split('"')[0]
    bearer = {"authorization": f"Bearer {mallory_token}"}
    mallory = TestClient(app)
    before = _labels(sessions)
    # mallory (another project) can neither see nor answer project one's tasks, nor use admin pages
    assert mallory.get(f"/annotate/{task_id}", headers=bearer).status_code == 403
    assert mallory.post(f"/annotate/{task_id}", data={**form_values(page), "choice": "a1"}, headers=bearer).status_code == 403
    assert mallory.get("/admin", headers=bearer).status_code == 401
    # bob's undo cannot withdraw alice's label
    assert bob.post("/undo", data={"csrf": csrf_of(page)}, follow_redirects=False).status_code == 303
    with sessions() as s:
        assert _labels(sessions) == before and s.query(Label).filter(Label.undone_at.is_not(None)).count() == 0


def test_missing_or_wrong_csrf_token_changes_nothing(admin, sessions, two_projects):
    alice, bob, _ = two_projects
    before = _labels(sessions)
    page = alice.get("/annotate").text
    task_id = page.split('action="/annotate/')[1].split('"')[0]
    values = form_values(page)
    bobs_csrf = csrf_of(bob.get("/annotate").text)
    for csrf in (None, "0" * 64, bobs_csrf):
        data = {**values, "choice": "a1"}
        data.pop("csrf")
        if csrf:
            data["csrf"] = csrf
        assert alice.post(f"/annotate/{task_id}", data=data).status_code == 403
        assert alice.post("/undo", data={"csrf": csrf} if csrf else {}).status_code == 403
        assert admin.post("/admin/projects/1/invite", data={"name": "eve", **({"csrf": csrf} if csrf else {})}).status_code == 403
        assert admin.post("/admin/projects/1/settings", data={"overlap": 5, "gold_share": 0.5}).status_code == 403
    with sessions() as s:
        assert _labels(sessions) == before and s.query(Label).filter(Label.undone_at.is_not(None)).count() == 0
        assert s.query(Annotator).filter_by(name="eve").count() == 0 and s.get(Project, 1).overlap == 2


def test_a_30_mb_body_gets_413(app, admin, sessions, two_projects):
    alice, _, _ = two_projects
    before = _labels(sessions)
    page = alice.get("/annotate").text
    task_id = page.split('action="/annotate/')[1].split('"')[0]
    big = "x" * (30 * 2**20)
    assert alice.post(f"/annotate/{task_id}", data={**form_values(page), "choice": "a1", "reason": big}).status_code == 413
    files = {"file": ("big.jsonl", b"{}\n" * (10 * 2**20))}
    assert admin.post("/admin/projects", data={"csrf": csrf_of(admin.get("/admin").text), "name": "big"},
                      files=files).status_code == 413

    def chunks():  # no Content-Length: the limit is counted as the body streams in
        for _ in range(30):
            yield b"y" * 2**20

    streamed = alice.post(f"/annotate/{task_id}", content=chunks(),
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert streamed.status_code == 413
    with sessions() as s:
        assert _labels(sessions) == before and s.query(Project).filter_by(name="big").count() == 0


def test_no_token_is_logged(app, admin, admin_token, caplog):
    caplog.set_level(logging.DEBUG)
    token = invite(admin, _project(admin), "carol")
    client = TestClient(app)
    client.get(f"/join/{token}")
    client.get("/annotate")
    admin_login(TestClient(app), admin_token)
    # what the server logged (the test's own HTTP client logs its URLs: not the server's doing)
    server_log = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    assert "GET /join/<token> 303" in server_log
    assert token not in server_log and admin_token not in server_log


def _project(admin) -> int:
    page = admin.get("/admin").text
    r = admin.post("/admin/projects", data={"csrf": csrf_of(page), "name": "logs"}, follow_redirects=False)
    return int(r.headers["location"].rsplit("/", 1)[1])


def test_a_post_without_a_token_gets_401_before_its_body_is_read(app, sessions):
    """Issue 27 item 8: an oversized field posted to /admin/projects without a token got 400 "Field
    exceeded maximum size" (FastAPI parses the form before the route checks the token), not 401."""
    anonymous = TestClient(app)
    big = "x" * (2 * 2**20)  # past the form parser's 1 MB a field, within the app's 10 MB body limit
    empty_upload = {"file": ("p.jsonl", b"")}  # makes the form multipart, as a browser's upload form is
    response = anonymous.post("/admin/projects", data={"name": big, "csrf": "x"}, files=empty_upload)
    assert response.status_code == 401 and "admin token required" in response.text
    assert "content-security-policy" in response.headers
    json_answer = anonymous.post("/admin/projects", data={"name": big}, files=empty_upload,
                                 headers={"accept": "application/json", "authorization": "Bearer wrong"})
    assert json_answer.status_code == 401 and json_answer.json() == {"detail": "admin token required: sign in at "
                                                                                 "/admin/login"}
    assert anonymous.post("/annotate/1", data={"reason": big}, files=empty_upload).status_code == 401
    assert anonymous.post("/undo", data={"csrf": "x"}).status_code == 401
    with sessions() as s:
        assert s.query(Project).count() == 0
