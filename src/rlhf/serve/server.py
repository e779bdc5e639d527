"""`rlhf serve`: load the models, start one decode worker each, run the API with uvicorn."""

from __future__ import annotations

import logging
import os
import time

from ..config.serve import ServeConfig
from ..models.load import load_causal_lm, load_tokenizer, resolve_model_dir
from ..rollout.generate import stop_token_ids
from .app import ServedModel, create_app
from .auth import ApiKeyGate, is_loopback, keys_from_env
from .engine import ENGINES


def model_names(specs: tuple[str, ...]) -> dict[str, str]:
    """Name -> directory for `--model` values: DIR is named by its last part, NAME=DIR by NAME."""
    if not specs:
        raise ValueError("give at least one --model DIR")
    named: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or os.sep in name or os.path.isdir(spec):
            name, path = os.path.basename(os.path.normpath(spec)), spec
        if name in named:
            raise ValueError(f"two models are named {name!r}: name them with --model NAME=DIR")
        named[name] = path
    return named


def load_models(cfg: ServeConfig) -> dict[str, ServedModel]:
    """Every `--model` loaded (eval mode, no gradients) with its engine started."""
    import torch

    from ..runtime.device import effective_precision

    # bf16 weights only where the CPU computes bf16 natively; elsewhere it is emulated, far slower
    dtype = torch.bfloat16 if effective_precision(cfg.precision, "cpu") == "bf16" else torch.float32
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    served = {}
    for name, path in model_names(cfg.model).items():
        directory = resolve_model_dir(path)
        tokenizer = load_tokenizer(directory, cfg.trust_remote_code)
        model = load_causal_lm(directory, cfg.trust_remote_code, dtype=dtype).eval().requires_grad_(False)
        engine_cls = ENGINES[cfg.engine]
        engine = engine_cls(model, tokenizer, max_batch=cfg.max_batch) if cfg.engine == "continuous" \
            else engine_cls(model, tokenizer)
        context = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
        served[name] = ServedModel(name=name, path=str(directory), tokenizer=tokenizer, engine=engine,
                                   stop_ids=frozenset(stop_token_ids(tokenizer, model)), context=int(context),
                                   created=int(time.time()))
    return served


def api_keys(cfg: ServeConfig) -> tuple[str, ...]:
    """The keys `/v1/` requests must carry (none without --api-key-env). A non-loopback --host
    without a key is refused unless --allow-unauthenticated: the API would be open to the network."""
    keys = keys_from_env(cfg.api_key_env) if cfg.api_key_env else ()
    if not keys and not is_loopback(cfg.host) and not cfg.allow_unauthenticated:
        raise ValueError(f"--host {cfg.host} exposes the API to the network without an API key: pass --api-key-env NAME "
                         "(an environment variable holding the key clients send as 'Authorization: Bearer KEY'), or "
                         "--allow-unauthenticated to serve it open")
    return keys


def build_app(cfg: ServeConfig):
    """The FastAPI app with its models loaded; `app.state.models` holds them (close their engines when done)."""
    keys = api_keys(cfg)  # before the models load: a refused start takes no time
    sessions = None
    if cfg.db:
        from ..feedback.store import open_store

        sessions = open_store(cfg.db)
    app = create_app(load_models(cfg), default_max_tokens=cfg.max_tokens, max_n=cfg.max_n,
                     max_body_bytes=int(cfg.max_body_mb * 2**20), sessions=sessions, project=cfg.project,
                     max_queue=cfg.max_queue, request_timeout=cfg.request_timeout,
                     log_prompts=cfg.log_prompts)
    if keys:
        app.add_middleware(ApiKeyGate, keys=keys)
    if cfg.monitor_scorer:
        start_monitor_scorer(app, cfg, sessions)
    return app


def start_monitor_scorer(app, cfg: ServeConfig, sessions) -> None:
    """`--monitor-scorer`: score the stored chat answers in the background (rlhf.serve.monitor_scorer)."""
    from ..rollout.scorers import load_scorer
    from .monitor_scorer import ScoringWorker

    worker = ScoringWorker(sessions, load_scorer(cfg.monitor_scorer), cfg.monitor_threshold, cfg.project).start()
    app.state.monitor_scorer = worker
    app.router.on_shutdown.append(worker.stop)


def run(cfg: ServeConfig) -> str:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = build_app(cfg)
    url = f"http://{cfg.host}:{cfg.port}/v1"
    auth = f"API key from ${cfg.api_key_env}" if cfg.api_key_env else "no API key"
    print(f"rlhf serve: {', '.join(app.state.models)} at {url} (OpenAI-compatible; engine {cfg.engine}; {auth})",
          flush=True)
    if cfg.db:
        print(f"chat page: http://{cfg.host}:{cfg.port}/chat (feedback in {cfg.db}, projects {cfg.project}-thumbs "
              f"and {cfg.project}-pairs); people sign in by invite link: rlhf label invite NAME --chat --db {cfg.db} "
              f"--project {cfg.project} --url http://{cfg.host}:{cfg.port}", flush=True)
    try:
        # SIGTERM: stop accepting, let the requests in flight finish (up to --drain-timeout), then exit
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info", timeout_graceful_shutdown=cfg.drain_timeout,
                    access_log=False)  # rlhf.serve.access logs each request as one JSON line instead
    finally:
        for served in app.state.models.values():
            served.engine.close()
    return url
