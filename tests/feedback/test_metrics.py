"""`/metrics` and `/health` of the labelling app: the counts Prometheus' own parser reads back
agree with what the clients did, route by route and status by status, and health says 503 when
the database is gone."""

from __future__ import annotations

import re
import shutil
from collections import Counter

from fastapi.testclient import TestClient
from feedback_helpers import annotator_client, answer, candidates, create_project, invite
from prometheus_client.parser import text_string_to_metric_families

from rlhf.feedback.app import create_app

# The route patterns of the paths this test visits (the metrics name routes, never raw paths).
ROUTES = [(r"/join/[^/]+", "/join/{token}"), (r"/annotate/\d+", "/annotate/{task_id}"),
          (r"/admin/projects/\d+/invite", "/admin/projects/{project_id}/invite"),
          (r"/admin/projects/\d+", "/admin/projects/{project_id}"), (r"/(admin|annotate|admin/projects)", None)]


def scrape(client: TestClient) -> dict[tuple, float]:
    answer_ = client.get("/metrics")
    assert answer_.status_code == 200 and answer_.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer_.text) for s in family.samples}


def grew(before: dict, after: dict, name: str) -> dict[tuple, float]:
    """{labels: increase} of the samples of `name` that changed."""
    out = {}
    for (sample, labels), value in after.items():
        if sample == name and value != before.get((sample, labels), 0.0):
            out[labels] = value - before.get((sample, labels), 0.0)
    return out


def route_of(path: str) -> str:
    for pattern, route in ROUTES:
        if re.fullmatch(pattern, path):
            return route or path
    return "other"


def test_metrics_agree_with_what_the_clients_did(app, admin, tmp_path):
    seen: Counter = Counter()  # (route, status) as the clients saw them

    def tally(response) -> None:
        seen[route_of(response.request.url.path), str(response.status_code)] += 1

    watcher = TestClient(app, base_url="http://testserver")  # scrapes, not tallied
    before = scrape(watcher)
    admin.event_hooks["response"].append(tally)
    project = create_project(admin, candidates(tmp_path, n=4))
    client = annotator_client(app, invite(admin, project, "ann"))
    client.event_hooks["response"].append(tally)
    seen["/join/{token}", "303"] += 1  # the join above ran before the hook was on
    first, task, values = answer(client, "a2")
    assert first.status_code == 303
    again = client.post(f"/annotate/{task}", data={**values, "choice": "a2"}, follow_redirects=False)
    assert again.status_code == 303  # the resent form stores nothing new
    assert answer(client, "tie")[0].status_code == 303
    assert answer(client, "a1", action="skip")[0].status_code == 303
    anonymous = TestClient(app, base_url="http://testserver")
    assert anonymous.post(f"/annotate/{task}", data={"choice": "a2"}).status_code == 401
    assert anonymous.get("/no/such/page").status_code == 404
    seen["other", "401"] += 1  # refused before routing, so no route to name
    seen["other", "404"] += 1
    after = scrape(watcher)

    requests = grew(before, after, "rlhf_label_requests_total")
    expected = {(("route", route), ("status", status)): n for (route, status), n in seen.items()}
    expected[(("route", "/metrics"), ("status", "200"))] = 1  # the first scrape, counted once it was sent
    assert requests == expected
    assert seen["/annotate/{task_id}", "303"] == 4 and seen["other", "401"] == 1 and seen["other", "404"] == 1
    timed = grew(before, after, "rlhf_label_request_duration_seconds_count")
    assert timed == {(("route", route),): sum(n for (r, _), n in expected.items() if r == ("route", route))
                     for route in {r[1] for r, _ in expected}}
    labels = grew(before, after, "rlhf_label_labels_submitted_total")
    assert labels == {(("outcome", "win"), ("project", "p")): 1, (("outcome", "tie"), ("project", "p")): 1,
                      (("outcome", "skip"), ("project", "p")): 1}
    assert "join/" not in watcher.get("/metrics").text.replace("/join/{token}", "")  # no invite token in any series


def test_health_is_ready_with_the_database_and_503_without(tmp_path):
    from rlhf.feedback.store import open_store

    db = tmp_path / "store" / "feedback.db"
    sessions = open_store(str(db))
    client = TestClient(create_app(sessions))
    for path in ("/health", "/healthz"):
        answer_ = client.get(path)
        assert answer_.status_code == 200 and answer_.json() == {"status": "ok", "database": "ok"}
    sessions.kw["bind"].dispose()  # no pooled connection left open on the old file
    shutil.rmtree(db.parent)
    db.mkdir(parents=True)  # a directory where the database was: SQLite cannot open it
    answer_ = client.get("/health")
    assert answer_.status_code == 503 and answer_.json()["status"] == "unavailable"
    assert "database" in answer_.json()
