"""What a check returns, how a share of cut examples becomes a verdict, and the printed table."""

from __future__ import annotations

from dataclasses import dataclass

PASS, WARN, FAIL, INFO = "pass", "warn", "FAIL", "info"

# A share of cut prompts (or examples) above this fails the doctor; any share above 0 warns.
# Most prompts cut means the model trains on text it cannot see whole: a silent failure.
FAIL_SHARE = 0.5


@dataclass(frozen=True)
class Check:
    name: str  # what was checked, e.g. "prompts cut by max_length"
    result: str  # PASS, WARN, FAIL or INFO (a figure with no verdict, e.g. the batch arithmetic)
    detail: str  # the numbers behind the result, in words


def share_check(name: str, count: int, total: int, what: str, hint: str = "", fail_above: float | None = FAIL_SHARE) -> Check:
    """PASS when none of `total` is affected, WARN when some are, FAIL when more than
    `fail_above` of them are (never with `fail_above=None`)."""
    share = count / total if total else 0.0
    detail = f"{count}/{total} {what} ({share:.0%})"
    if count == 0:
        return Check(name, PASS, detail)
    failed = fail_above is not None and share > fail_above
    return Check(name, FAIL if failed else WARN, detail + (f"; {hint}" if hint else ""))


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.result == FAIL]


def table(checks: list[Check], width: int = 100) -> str:
    """A plain-text table: check | result | detail (the detail wrapped to `width` characters)."""
    import textwrap

    name_w = max(len("check"), *(len(c.name) for c in checks))
    result_w = len("result")
    lines = [f"{'check':<{name_w}}  {'result':<{result_w}}  detail", f"{'-' * name_w}  {'-' * result_w}  {'-' * 6}"]
    detail_w = max(30, width - name_w - result_w - 4)
    for c in checks:
        wrapped = textwrap.wrap(c.detail, detail_w) or [""]
        lines.append(f"{c.name:<{name_w}}  {c.result:<{result_w}}  {wrapped[0]}")
        lines += [f"{'':<{name_w}}  {'':<{result_w}}  {more}" for more in wrapped[1:]]
    return "\n".join(lines)


def markdown(checks: list[Check]) -> str:
    """The same table in Markdown (for READMEs and reports)."""
    rows = ["| check | result | detail |", "|---|---|---|"]
    rows += [f"| {c.name} | {c.result} | {c.detail.replace('|', '/')} |" for c in checks]
    return "\n".join(rows)
