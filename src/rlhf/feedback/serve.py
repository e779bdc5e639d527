"""`rlhf label serve`: run the labelling app with uvicorn.

On the first start (or with --new-admin-token) the admin token is printed to the terminal,
once; the store keeps only its hash. Uvicorn's access log is off because it would write the
invite tokens that links carry in their path; the app logs requests itself, tokens cut out.
"""

from __future__ import annotations

import logging

from rlhf.config.feedback import LabelServeConfig
from rlhf.feedback import repo
from rlhf.feedback.app import create_app
from rlhf.feedback.store import database_url, open_store


def run(cfg: LabelServeConfig) -> str:
    import uvicorn

    sessions = open_store(cfg.db)
    with sessions() as s:
        token = repo.issue_admin_token(s, rotate=cfg.new_admin_token)
    url = f"http://{cfg.host}:{cfg.port}"
    if token:
        print(f"admin token (shown once, keep it): {token}\nsign in at {url}/admin/login", flush=True)
    else:
        print(f"admin pages: {url}/admin (token printed on the first start; --new-admin-token replaces it)", flush=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(sessions, max_body_bytes=int(cfg.max_body_mb * 2**20))
    uvicorn.run(app, host=cfg.host, port=cfg.port, access_log=False, log_level="info")
    return database_url(cfg.db)
