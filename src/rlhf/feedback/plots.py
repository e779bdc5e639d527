"""The dashboard's figures as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # a server has no screen
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def leaderboard_png(rows: list[dict]) -> bytes:
    """Bradley-Terry rating of each model with its bootstrap 95% interval, best at the top."""
    fig, ax = plt.subplots(figsize=(6, 0.5 * max(len(rows), 1) + 1.2))
    names = [r["model"] for r in rows][::-1]
    ratings = [r["bt"] for r in rows][::-1]
    errors = [[r["bt"] - r["bt_low"] for r in rows][::-1], [r["bt_high"] - r["bt"] for r in rows][::-1]]
    ax.errorbar(ratings, range(len(rows)), xerr=errors, fmt="o", capsize=4)
    ax.set_yticks(range(len(rows)), names)
    ax.set_xlabel("Bradley-Terry rating (Elo scale), 95% bootstrap interval")
    ax.grid(axis="x", alpha=0.3)
    if not rows:
        ax.text(0.5, 0.5, "no model comparisons yet", ha="center", transform=ax.transAxes)
    return _png(fig)


def throughput_png(timeline: dict[str, list]) -> bytes:
    """Cumulative labels over time, one line per annotator."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, times in timeline.items():
        if times:
            ax.step(times, range(1, len(times) + 1), where="post", label=name)
    ax.set_ylabel("labels")
    ax.set_xlabel("time (UTC)")
    if any(timeline.values()):
        ax.legend(fontsize=8)
        fig.autofmt_xdate()
    else:
        ax.text(0.5, 0.5, "no labels yet", ha="center", transform=ax.transAxes)
    return _png(fig)


def satisfaction_png(versions: list[dict]) -> bytes:
    """Thumbs-up share per day with its 95% Wilson interval, one line per model version (monitor rows)."""
    import datetime as dt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    shown = [v for v in versions if v["days"]]
    for i, v in enumerate(shown):
        shift = dt.timedelta(hours=12 + 6 * (i - (len(shown) - 1) / 2))  # side by side within the day, not on top
        x = [dt.datetime.fromisoformat(day) + shift for day in v["days"]]
        days = list(v["days"].values())
        y = [d["up_share"] for d in days]
        errors = [[d["up_share"] - d["up_low"] for d in days], [d["up_high"] - d["up_share"] for d in days]]
        ax.errorbar(x, y, yerr=errors, fmt="o-", capsize=3, label=v["version"][-48:])
    ax.set_ylim(0, 1)
    ax.set_ylabel("thumbs-up share (95% interval)")
    ax.grid(axis="y", alpha=0.3)
    if shown:
        ax.legend(fontsize=8, loc="lower left")
        fig.autofmt_xdate()
    else:
        ax.text(0.5, 0.5, "no thumbs yet", ha="center", transform=ax.transAxes)
    return _png(fig)
