"""Agreement between annotators and ratings of the models they compared: pure functions.

Agreement works on categories (any hashable: a winner, "no preference", a thumb):
- `cohen_kappa(a, b)`: two annotators over the items both labelled, (p_o - p_e) / (1 - p_e);
- `krippendorff_alpha(units)`: any number of annotators, missing labels allowed, nominal
  distance, 1 - D_o / D_e from the coincidence matrix (Krippendorff 2011).

Ratings work on battles `(model_a, model_b, score_a)` with score_a 1 (a won), 0 (b won) or
0.5 (tie; "both bad" counts as a tie, as Chatbot Arena does):
- `elo`: online Elo in battle order (K=4, scale 400, base 10, start 1000, Arena's settings);
- `bradley_terry`: maximum-likelihood strengths by Hunter's (2004) MM iterations, ties as half
  a win each way, on the Elo scale (400 log10 odds) with the mean rating at 1000;
- `bootstrap`: 95% intervals by refitting on battles resampled with replacement.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from typing import Callable, Hashable, Sequence

Battle = tuple[str, str, float]


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two equally long label sequences (item i labelled a[i] and b[i]).
    NaN when chance agreement is total (both always said the same one thing)."""
    if len(a) != len(b) or not a:
        raise ValueError("cohen_kappa needs two non-empty sequences of the same length")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    return float("nan") if expected == 1 else (observed - expected) / (1 - expected)


def krippendorff_alpha(units: Sequence[Sequence[Hashable]]) -> float:
    """Krippendorff's alpha, nominal. `units`: per item, the labels it got (any number;
    items with fewer than two labels carry no information and are ignored)."""
    coincidence: dict[tuple, float] = defaultdict(float)
    for labels in units:
        m = len(labels)
        if m < 2:
            continue
        for i, x in enumerate(labels):
            for j, y in enumerate(labels):
                if i != j:
                    coincidence[x, y] += 1 / (m - 1)
    n_c: dict[Hashable, float] = defaultdict(float)
    for (x, _), value in coincidence.items():
        n_c[x] += value
    n = sum(n_c.values())
    if n <= 1:
        return float("nan")
    disagree_observed = sum(v for (x, y), v in coincidence.items() if x != y) / n
    disagree_expected = sum(n_c[x] * n_c[y] for x in n_c for y in n_c if x != y) / (n * (n - 1))
    return float("nan") if disagree_expected == 0 else 1 - disagree_observed / disagree_expected


def elo(battles: Sequence[Battle], k: float = 4.0, scale: float = 400.0, base: float = 10.0,
        initial: float = 1000.0) -> dict[str, float]:
    """Online Elo ratings after playing `battles` in order."""
    rating: dict[str, float] = defaultdict(lambda: initial)
    for a, b, score_a in battles:
        expected_a = 1 / (1 + base ** ((rating[b] - rating[a]) / scale))
        rating[a] += k * (score_a - expected_a)
        rating[b] -= k * (score_a - expected_a)
    return dict(rating)


def bradley_terry(battles: Sequence[Battle], prior: float = 0.5, iterations: int = 1000,
                  tol: float = 1e-10, scale: float = 400.0, center: float = 1000.0) -> dict[str, float]:
    """Bradley-Terry ratings: P(a beats b) = 1 / (1 + 10^((R_b - R_a) / 400)).

    prior: games tied against a virtual opponent of average strength, per model, so that a
    model that never won (or never lost) gets a finite rating; 0 gives the plain MLE."""
    wins: dict[str, float] = defaultdict(float)
    games: dict[tuple[str, str], float] = defaultdict(float)
    for a, b, score_a in battles:
        wins[a] += score_a
        wins[b] += 1 - score_a
        games[a, b] += 1
        games[b, a] += 1
    models = sorted(wins)
    strength = {m: 1.0 for m in models}
    for _ in range(iterations):
        new = {}
        for m in models:
            denominator = sum(n / (strength[m] + strength[o]) for (x, o), n in games.items() if x == m)
            new[m] = (wins[m] + prior / 2) / (denominator + prior / (strength[m] + 1.0))
        log_mean = sum(math.log(v) for v in new.values()) / len(new)
        new = {m: v / math.exp(log_mean) for m, v in new.items()}  # fix the scale: geometric mean 1
        done = max(abs(math.log(new[m] / strength[m])) for m in models) < tol
        strength = new
        if done:
            break
    return {m: center + scale * math.log10(strength[m]) for m in models}


def bootstrap(battles: Sequence[Battle], rate: Callable[[Sequence[Battle]], dict[str, float]],
              rounds: int = 200, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """(2.5th, 50th, 97.5th percentile) of each model's rating over `rounds` refits on battles
    drawn with replacement, in random order (which matters to online Elo): a 95% interval and
    the median."""
    rng = random.Random(seed)
    samples: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        drawn = rng.choices(battles, k=len(battles))
        for model, value in rate(drawn).items():
            samples[model].append(value)
    return {m: (_percentile(v, 2.5), _percentile(v, 50), _percentile(v, 97.5)) for m, v in samples.items()}


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def leaderboard(battles: Sequence[Battle], rounds: int = 200, seed: int = 0) -> list[dict]:
    """Per model: battles, win rate (ties half), Elo and Bradley-Terry ratings with bootstrap
    95% intervals; sorted by Bradley-Terry rating, best first. Online Elo depends on the order
    of battles, so its rating is the bootstrap median (as Chatbot Arena reported it); the
    Bradley-Terry rating is the fit on all battles."""
    if not battles:
        return []
    bt_ratings = bradley_terry(battles)
    elo_ci = bootstrap(battles, elo, rounds, seed)
    bt_ci = bootstrap(battles, bradley_terry, rounds, seed)
    played, won = Counter(), Counter()
    for a, b, score_a in battles:
        played[a] += 1
        played[b] += 1
        won[a] += score_a
        won[b] += 1 - score_a
    rows = [{"model": m, "battles": played[m], "win_rate": won[m] / played[m],
             "elo": elo_ci[m][1], "elo_low": elo_ci[m][0], "elo_high": elo_ci[m][2],
             "bt": bt_ratings[m], "bt_low": bt_ci[m][0], "bt_high": bt_ci[m][2]} for m in bt_ratings]
    return sorted(rows, key=lambda r: -r["bt"])
