"""`rlhf serve --db URL --monitor-scorer SPEC`: a safety scorer's verdict on every answer the chat
page stores, so that the monitor (`rlhf label monitor`, the labelling app's /admin/monitor) can
show per model version the share of answers it flagged (score below `--monitor-threshold`).

Why the server scores and the monitor only reads: a scorer is any scorer the other stages take
(rlhf.rollout.scorers.load_scorer: a reward-model directory, or a `module:function` such as a
rule, a judge, or the demo's `rlhf.demo.oracle:gold_reward`), which may need torch; the feedback
package and its commands never import torch, and the server already does. Each answer is scored
once and the verdict stored (table `response_scores`), so every report reads the same number.

Why a background thread rather than a step of the chat request: no user waits for the scorer,
answers are scored in batches (one reward-model forward pass for many), and answers stored
before the scorer was turned on, or while the server was down, are scored when it starts. The
thread scores the answers of the chat projects that have no score by this scorer yet, then
sleeps a few seconds. A reward model's score is normalised by its training-set mean and std
(the threshold then reads in standard deviations); a callable's score is used as it is.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..data.records import Message
from ..feedback import repo
from ..feedback.tables import Prompt, Response, ResponseScore

log = logging.getLogger("rlhf.serve.monitor")


def unscored(s, project: str, scorer: str, limit: int) -> list[tuple[Response, object]]:
    """(answer, its prompt's content) of the chat projects' answers with no score by `scorer`, oldest first."""
    ids = [p.id for p in (repo.project_by_name(s, f"{project}{x}") for x in ("-thumbs", "-pairs")) if p is not None]
    if not ids:
        return []
    done = select(ResponseScore.response_id).where(ResponseScore.scorer == scorer)
    rows = s.execute(select(Response, Prompt.content).join(Prompt, Prompt.id == Response.prompt_id)
                     .where(Prompt.project_id.in_(ids), Response.id.not_in(done)).order_by(Response.id).limit(limit))
    return [(answer, content) for answer, content in rows]


def as_prompt(content):
    """The stored prompt (a string, or the conversation's messages) as the scorers take it."""
    return content if isinstance(content, str) else tuple(Message(m["role"], m["content"]) for m in content)


def score_pending(sessions, scorer, threshold: float, project: str = "chat", batch: int = 32) -> int:
    """Score every unscored answer of the chat projects of `project` in batches; how many were scored."""
    total = 0
    while True:
        with sessions() as s:
            rows = unscored(s, project, scorer.name, batch)
            if not rows:
                return total
            raw = scorer([as_prompt(content) for _, content in rows], [answer.text for answer, _ in rows])
            scores = scorer.normalize(raw).tolist()
            s.add_all(ResponseScore(response_id=answer.id, scorer=scorer.name, score=score, flagged=score < threshold)
                      for (answer, _), score in zip(rows, scores))
            try:
                s.commit()
            except IntegrityError:  # another server on the same store scored them first
                s.rollback()
            total += len(rows)


class ScoringWorker:
    """The background thread of the module docstring: `start()`, then `stop()` at shutdown."""

    def __init__(self, sessions, scorer, threshold: float, project: str, interval: float = 5.0):
        self.sessions, self.scorer, self.threshold, self.project = sessions, scorer, threshold, project
        self.interval, self.stopping = interval, threading.Event()
        self.thread = threading.Thread(target=self._loop, name="monitor-scorer", daemon=True)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                scored = score_pending(self.sessions, self.scorer, self.threshold, self.project)
                if scored:
                    log.info("monitor scorer %s: scored %d answers", self.scorer.name, scored)
            except Exception:  # a failing scorer must not take the server down: said, and tried again later
                log.exception("monitor scorer %s failed; trying again in %.0f s", self.scorer.name, self.interval)
            self.stopping.wait(self.interval)

    def start(self) -> "ScoringWorker":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
