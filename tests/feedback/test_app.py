"""The web app through FastAPI's TestClient: projects, invites, labelling, undo, skip,
overlap, idempotent resubmission, multi-turn prompts, the dashboard and exports."""

import re

from feedback_helpers import (
    annotator_client,
    answer,
    candidates,
    create_project,
    csrf_of,
    form_values,
    invite,
    write_jsonl,
)

from rlhf.data.formats import read_comparisons
from rlhf.feedback import repo
from rlhf.feedback.tables import Label


def test_two_annotators_label_undo_and_export(app, admin, sessions, tmp_path):
    project_id = create_project(admin, candidates(tmp_path, n=3), overlap=2)
    alice = annotator_client(app, invite(admin, project_id, "alice"))
    bob = annotator_client(app, invite(admin, project_id, "bob"))
    assert "0 of 3 done" in alice.get("/annotate").text
    for _ in range(3):
        r, _, _ = answer(alice, "a3")
        assert r.status_code == 303
    assert "Nothing left to label" in alice.get("/annotate").text
    for _ in range(3):
        answer(bob, "tie")
    page = bob.get("/annotate").text
    undone = bob.post("/undo", data={"csrf": csrf_of(page)}, follow_redirects=False)
    task_id = int(undone.headers["location"].rsplit("/", 1)[1])
    assert "2 of 3 done" in bob.get(f"/annotate/{task_id}").text
    # bob changes his mind on that task: "B is much better"
    values = form_values(bob.get(f"/annotate/{task_id}").text)
    assert bob.post(f"/annotate/{task_id}", data={**values, "choice": "b3", "reason": "clearer"},
                    follow_redirects=False).status_code == 303
    with sessions() as s:
        labels = s.query(Label).order_by(Label.id).all()
        assert len(labels) == 7 and sum(l.undone_at is not None for l in labels) == 1
        assert labels[-1].strength == 3 and labels[-1].reason == "clearer"
    dashboard = admin.get(f"/admin/projects/{project_id}/dashboard").text
    assert re.search(r"<td>alice</td><td>bob</td><td>3</td>", dashboard)
    assert re.search(r"<td>bob</td><td>3</td><td>0</td><td>1</td>", dashboard)  # 3 labels, 0 skips, 1 undone
    for plot in ("throughput", "leaderboard"):
        png = admin.get(f"/admin/projects/{project_id}/plots/{plot}.png")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    export = admin.get(f"/admin/projects/{project_id}/export", params={"format": "comparisons", "rule": "every"})
    out = tmp_path / "export.jsonl"
    out.write_bytes(export.content)
    assert len(read_comparisons(out)) == 4  # alice's 3 wins + bob's redone task; ties give none


def test_overlap_one_gives_each_task_to_one_person(app, admin, tmp_path):
    project_id = create_project(admin, candidates(tmp_path, n=4), overlap=1)
    people = [annotator_client(app, invite(admin, project_id, name)) for name in ("a", "b")]
    seen = [answer(people[i % 2])[1] for i in range(4)]
    assert sorted(seen) == sorted(set(seen))  # four different tasks
    for client in people:
        assert "Nothing left" in client.get("/annotate").text
    # a full task is closed to the other annotator, even by its address
    assert people[1].get(f"/annotate/{seen[0]}").status_code == 403


def test_a_resubmitted_form_stores_one_label(app, admin, sessions, tmp_path):
    project_id = create_project(admin, candidates(tmp_path, n=2))
    client = annotator_client(app, invite(admin, project_id, "a"))
    r, task_id, values = answer(client, "a1")
    again = client.post(f"/annotate/{task_id}", data={**values, "choice": "b3"}, follow_redirects=False,
                        headers={"accept": "application/json"})
    assert r.status_code == 303 and again.status_code == 200 and again.json()["created"] is False
    fresh = {**values, "request_id": "another-request-id"}
    assert client.post(f"/annotate/{task_id}", data={**fresh, "choice": "b3"}).status_code == 409
    with sessions() as s:
        assert [(l.outcome, l.strength) for l in s.query(Label)] == [("win", 1)]


def test_skip_and_progress(app, admin, sessions, tmp_path):
    project_id = create_project(admin, candidates(tmp_path, n=2))
    client = annotator_client(app, invite(admin, project_id, "a"))
    r, task_id, _ = answer(client, action="skip")
    assert r.status_code == 303 and "1 of 2 done" in client.get("/annotate").text
    with sessions() as s:
        assert s.query(Label).one().outcome == "skip" and repo.live_labels(s, repo.project_by_name(s, "p")) == []


def test_multi_turn_prompt_ranking_and_thumbs_pages(app, admin, tmp_path):
    conversation = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "A joke?"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": conversation, "responses": ["r1", "r2", "r3"]}])
    ranking = annotator_client(app, invite(admin, create_project(admin, path, "rank", "ranking"), "a"))
    page = ranking.get("/annotate").text
    assert page.count('class="turn') == 4 and "A joke?" in page and page.count("<select name=\"rank_") == 3
    task_id = int(re.search(r'action="/annotate/(\d+)"', page).group(1))
    ids = re.findall(r'name="rank_(\d+)"', page)
    values = form_values(page)
    assert ranking.post(f"/annotate/{task_id}", data={**values, **{f"rank_{i}": "1" for i in ids}}).status_code == 422
    ranks = {f"rank_{i}": str(k + 1) for k, i in enumerate(ids)}
    assert ranking.post(f"/annotate/{task_id}", data={**values, **ranks}, follow_redirects=False).status_code == 303

    thumbs = annotator_client(app, invite(admin, create_project(admin, path, "thumbs", "thumbs"), "a"))
    r, _, _ = answer(thumbs, "up")
    assert r.status_code == 303 and "1 of 3 done" in thumbs.get("/annotate").text


def test_responses_are_shown_in_a_per_annotator_random_order(app, admin, tmp_path):
    project_id = create_project(admin, candidates(tmp_path, n=30), overlap=2)
    lefts = []
    for name in ("a", "b"):
        client = annotator_client(app, invite(admin, project_id, name))
        orders = {}
        for task_id in range(1, 31):
            page = client.get(f"/annotate/{task_id}").text
            orders[task_id] = form_values(page)["left"]
            assert form_values(client.get(f"/annotate/{task_id}").text)["left"] == orders[task_id]  # stable on reload
        lefts.append(orders)
    stored_first = sum(int(lefts[0][t]) % 2 == 1 for t in lefts[0])  # odd ids were stored first
    assert 5 <= stored_first <= 25 and lefts[0] != lefts[1]


def test_upload_of_a_malformed_file_names_the_line(admin, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "responses": ["x", "y"]}\nnot json\n')
    page = admin.get("/admin").text
    with bad.open("rb") as f:
        r = admin.post("/admin/projects", data={"csrf": csrf_of(page), "name": "x"}, files={"file": ("bad.jsonl", f)})
    assert r.status_code == 400 and "bad.jsonl:2: invalid JSON" in r.text
    assert "No project yet" in admin.get("/admin").text  # nothing half-created


def test_a_task_filled_while_the_page_was_open_refuses_the_late_answer(app, admin, sessions, tmp_path):
    project_id = create_project(admin, candidates(tmp_path, n=1), overlap=1)
    early, late = (annotator_client(app, invite(admin, project_id, name)) for name in ("early", "late"))
    late_page = late.get("/annotate").text  # both see the only task
    assert answer(early, "a1")[0].status_code == 303
    task_id = re.search(r'action="/annotate/(\d+)"', late_page).group(1)
    r = late.post(f"/annotate/{task_id}", data={**form_values(late_page), "choice": "b1"}, follow_redirects=False)
    assert r.status_code == 403
    with sessions() as s:
        assert s.query(Label).count() == 1


def test_every_page_has_an_icon(app):
    """Issue 27 item 8: a favicon 404 on every page of the labelling app."""
    from fastapi.testclient import TestClient

    client = TestClient(app)
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.content.startswith(b"<svg")
    assert '<link rel="icon" href="/favicon.ico"' in client.get("/").text
    assert '<link rel="icon" href="/favicon.ico"' in client.get("/admin/login").text
