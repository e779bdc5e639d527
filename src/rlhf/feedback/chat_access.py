"""Who may give feedback on the chat page of `rlhf serve --db`, and `rlhf label invite`.

The chat page signs people in as the labelling app signs in annotators: a personal invite link
holding a random token (`repo.invite`, which keeps only its hash), a cookie holding the token,
and forms that carry a CSRF token derived from it (`rlhf.feedback.security`). A chat invite makes
NAME an annotator of project `<prefix>-thumbs` (where thumbs go) and, under the same name, of
`<prefix>-pairs` (where regenerate-and-pick and arena votes go): every chat label then has its
author, and the labelling app's per-annotator table and agreement figures (its dashboard, per
project) count chat feedback as that person's. An annotator invited to either project from the
admin pages can sign in to the chat page too; annotators of other projects cannot.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from rlhf.config.feedback import LabelInviteConfig
from rlhf.feedback import repo
from rlhf.feedback.store import database_url, open_store
from rlhf.feedback.tables import Annotator, Project

# project mode -> the suffix of the chat project that holds it (`rlhf.iterate.collect` reads "-pairs")
CHAT_PROJECTS = {"thumbs": "thumbs", "pairwise": "pairs"}


def chat_projects(s: Session, prefix: str) -> dict[str, Project]:
    """mode -> the chat's project of that mode (`<prefix>-thumbs`, `<prefix>-pairs`), created if missing;
    the caller commits."""
    return {mode: repo.project_by_name(s, f"{prefix}-{suffix}") or repo.create_project(s, f"{prefix}-{suffix}", mode)
            for mode, suffix in CHAT_PROJECTS.items()}


def invite_to_chat(s: Session, prefix: str, name: str) -> str:
    """A fresh chat sign-in token for `name` (an older one of theirs stops working); the caller commits."""
    projects = chat_projects(s, prefix)
    token = repo.invite(s, projects["thumbs"], name)
    author_in(s, repo.annotator_by_name(s, projects["thumbs"], name), projects["pairwise"])  # their picks and votes
    return token


def chat_user(s: Session, prefix: str, token: str | None) -> Annotator | None:
    """The annotator whose invite token this is, when they belong to one of the chat's projects."""
    annotator = repo.annotator_by_token(s, token)
    if annotator is None:
        return None
    project = s.get(Project, annotator.project_id)
    return annotator if project.name in {f"{prefix}-{suffix}" for suffix in CHAT_PROJECTS.values()} else None


def author_in(s: Session, user: Annotator, project: Project) -> Annotator:
    """The signed-in person's annotator in `project`: the same name, created when missing. A new one gets
    an invite token that nobody is shown (they sign in with the link they have): the dashboards take an
    annotator without a token for imported labels and give it no pace."""
    if user.project_id == project.id:
        return user
    author = repo.annotator_by_name(s, project, user.name)
    if author is None:
        repo.invite(s, project, user.name)
        author = repo.annotator_by_name(s, project, user.name)
    return author


def run(cfg: LabelInviteConfig) -> str:
    """`rlhf label invite NAME`: print the personal sign-in link (once: the command's result is the store)."""
    link, where = invite_link(cfg)
    name = cfg.name.strip()
    print(f"invite link for {name} to {where}; send it to {name} only. It is shown once (the store keeps only its "
          f"hash), and inviting {name} again replaces it:\n{link}", flush=True)
    return database_url(cfg.db)


def invite_link(cfg: LabelInviteConfig) -> tuple[str, str]:
    """(the link, what it signs in to) for `rlhf label invite`; the store is changed and committed."""
    name = cfg.name.strip()
    if not name:
        raise ValueError("give the person's NAME: rlhf label invite NAME [--chat] --db DB")
    url = (cfg.url or ("http://127.0.0.1:8000" if cfg.chat else "http://127.0.0.1:8080")).rstrip("/")
    sessions = open_store(cfg.db)
    with sessions() as s:
        if cfg.chat:
            prefix = cfg.project.strip() or "chat"
            link = f"{url}/chat/join/{invite_to_chat(s, prefix, name)}"
            where = f"the chat page (feedback in projects {prefix}-thumbs and {prefix}-pairs)"
        else:
            project = repo.project_by_name(s, cfg.project.strip()) if cfg.project.strip() else None
            if project is None:
                raise ValueError(f"no labelling project {cfg.project!r} in {cfg.db}: name one with --project "
                                 "(or pass --chat for the chat page of rlhf serve)")
            link = f"{url}/join/{repo.invite(s, project, name)}"
            where = f"project {project.name}"
        s.commit()
    return link, where
