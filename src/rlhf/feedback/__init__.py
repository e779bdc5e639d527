"""Human feedback: the labelling web app and its files (`rlhf label serve|import|export`).

    tables     SQLAlchemy models: projects, prompts, responses, tasks, annotators, labels
    store      engine (SQLite WAL by default, PostgreSQL by URL) + Alembic migrations on start
    repo       reads and writes the routes and commands use
    assign     which task an annotator gets next (pure)
    aggregate  labels -> training examples: majority, every label, ties, agreement, gold (pure)
    stats      Cohen's kappa, Krippendorff's alpha, Elo, Bradley-Terry, bootstrap (pure)
    importer   `rlhf label import`: files the toolkit's readers accept -> tasks and labels
    export     `rlhf label export`: labels -> comparisons / rankings / binary JSONL
    app, routes_admin, routes_annotate, templates/, static/: the FastAPI app (`rlhf label serve`)

This package never imports torch, `rlhf.train` or `rlhf.models`: an annotation server needs
only the web dependencies (a test runs the app with torch imports blocked).
"""
