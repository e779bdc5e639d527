"""The code in README.md and docs/ runs, and the docs' generated parts match their source.

Every fenced block of README.md and docs/**/*.md in `python`, `bash`, `sh`, `shell` or `console`
claims to run. It is run here (in a temporary directory, with `RLHF_CACHE` there too, on the tiny
shipped model) unless the line right above its fence is `<!-- not run: REASON -->`, which is for
long runs (the demo, reward models on HH), GPUs, launchers of several processes and servers. A
`console` block runs its `$ ` lines; a `bash` block runs as one `bash -e -o pipefail` script;
`rlhf` on PATH is this tree's `python -m rlhf`. Identical blocks (the README's and the home page's)
run once. Output blocks (`text`, no language) are not run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN_LANGUAGES = {"python", "bash", "sh", "shell", "console"}
NOT_RUN = re.compile(r"^<!-- not run: (\S.*?) -->$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
TIME_LIMIT_S = {"python": 180, "shell": 60}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    not_run: str | None  # the reason given in the marker above the fence, or None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the `not run` marker right above each."""
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, language = len(m.group(1)), m.group(2), m.group(3).lower()
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1  # the closing fence
        above = lines[start - 1].strip() if start > 0 else ""
        marker = NOT_RUN.match(above)
        blocks.append(Block(path, start + 1, language, "\n".join(body) + "\n", marker.group(1) if marker else None))
    return blocks


def all_blocks() -> list[Block]:
    return [b for page in PAGES for b in fenced_blocks(page)]


def blocks_to_run() -> list[Block]:
    seen, out = set(), []
    for b in all_blocks():
        if b.language in RUN_LANGUAGES and b.not_run is None and (b.language, b.code) not in seen:
            seen.add((b.language, b.code))
            out.append(b)
    return out


def run_block(block: Block, workdir: Path) -> subprocess.CompletedProcess:
    """Run one block in `workdir`; raises AssertionError with its output when it fails."""
    workdir.mkdir(parents=True, exist_ok=True)
    bindir = workdir / ".bin"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "rlhf"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rlhf "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, RLHF_CACHE=str(workdir / ".cache"), HF_HUB_OFFLINE="1", MPLBACKEND="Agg",
               PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p))
    if block.language == "python":
        script = workdir / "block.py"
        script.write_text(block.code, encoding="utf-8")
        cmd, limit = [sys.executable, str(script)], TIME_LIMIT_S["python"]
    else:
        code = block.code
        if block.language == "console":  # the `$ ` lines are commands, the rest their output
            code = "\n".join(line[2:] for line in code.split("\n") if line.startswith("$ ")) + "\n"
        script = workdir / "block.sh"
        script.write_text(code, encoding="utf-8")
        cmd, limit = ["bash", "-e", "-o", "pipefail", str(script)], TIME_LIMIT_S["shell"]
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{block.where}: still running after {limit} s; mark it "
                             "`<!-- not run: REASON -->` or make it faster") from None
    assert proc.returncode == 0, (f"{block.where}: exit {proc.returncode}\n--- code\n{block.code}"
                                  f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
    return proc


@pytest.mark.parametrize("block", blocks_to_run(), ids=lambda b: b.where)
def test_block_runs(block, tmp_path):
    run_block(block, tmp_path)


def test_the_runnable_blocks_are_few():
    # each costs seconds on 2 cores; a long one belongs behind a `not run` marker
    assert 1 <= len(blocks_to_run()) <= 8, [b.where for b in blocks_to_run()]


def test_every_not_run_marker_sits_on_a_code_block():
    """A marker that is not right above a fence (a blank line between, a typo) disables nothing."""
    marked = {(b.path, b.line - 2) for b in all_blocks() if b.not_run}
    for page in PAGES:
        for n, line in enumerate(page.read_text(encoding="utf-8").split("\n")):
            if "not run" in line and line.strip().startswith("<!--"):
                assert NOT_RUN.match(line.strip()), f"{page.relative_to(ROOT)}:{n + 1}: write <!-- not run: REASON -->"
                assert (page, n) in marked, f"{page.relative_to(ROOT)}:{n + 1}: the marker must be right above a fence"


def test_a_broken_block_fails(tmp_path):
    for language, code in [("python", "raise SystemExit(3)\n"), ("bash", "true\nfalse\ntrue\n"),
                           ("console", "$ rlhf no-such-command\n"), ("python", "import rlhf\nrlhf.sft(model='/nonexistent')\n")]:
        with pytest.raises(AssertionError, match="exit"):
            run_block(Block(ROOT / "README.md", 1, language, code, None), tmp_path / language)


def test_fences_are_parsed_with_their_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n<!-- not run: a server -->\n```bash\nrlhf serve\n```\n\n- item\n\n  ```python\n"
                    "  print(1)\n  ```\n````console\n$ rlhf --help\n```\n````\n", encoding="utf-8")
    a, b, c = fenced_blocks(page)
    assert (a.language, a.code, a.not_run, a.line) == ("bash", "rlhf serve\n", "a server", 4)
    assert (b.language, b.code, b.not_run) == ("python", "print(1)\n", None)
    assert (c.language, c.code) == ("console", "$ rlhf --help\n```\n")


def test_the_readme_keeps_its_two_commands():
    """.ci/run runs the README's second command; the README must keep showing it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 -e . && rlhf demo\n" in readme)
    test_command = "pip install torch==2.13.0 -e '.[test]' && python -m pytest -q"
    assert test_command in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command.replace("pip install ", "pip install -q ") in ci  # the same command, quieter
    assert len(readme.split("\n")) <= 260


def test_the_algorithm_list_in_the_ppo_page_is_the_registry_s():
    from rlhf.config.algorithms import help_text

    page = (ROOT / "docs" / "commands" / "ppo.md").read_text(encoding="utf-8")
    listed = [b.code for b in fenced_blocks(ROOT / "docs" / "commands" / "ppo.md") if b.code.startswith("algorithms (--algo):")]
    assert listed == [help_text().rstrip("\n") + "\n"], "regenerate the list: python -c \"from rlhf.config.algorithms import help_text; print(help_text())\""
    assert "help_text" in page


def architecture_table() -> dict[str, int]:
    """`| layer | module | ... |` rows of docs/architecture.md as {module: layer}."""
    rows = {}
    for line in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").split("\n"):
        m = re.match(r"^\|\s*(\d+)\s*\|\s*`([\w.]+)`\s*\|", line)
        if m:
            assert m.group(2) not in rows, f"{m.group(2)} twice in docs/architecture.md"
            rows[m.group(2)] = int(m.group(1))
    return rows


def test_the_architecture_page_is_the_import_layers_table():
    spec = importlib.util.spec_from_file_location("import_layers", ROOT / "tests" / "test_import_layers.py")
    layers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layers)
    assert architecture_table() == layers.LAYERS, "docs/architecture.md and tests/test_import_layers.py's LAYERS differ"


def test_every_docs_page_is_in_the_nav():
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]

    def pages(item):
        if isinstance(item, str):
            yield item
        elif isinstance(item, list):
            for x in item:
                yield from pages(x)
        elif isinstance(item, dict):
            for x in item.values():
                yield from pages(x)

    listed = set(pages(nav))
    on_disk = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk == listed, (sorted(on_disk - listed), sorted(listed - on_disk))


def home_page_from_readme(readme: str) -> str:
    """docs/index.md is the README with links into docs/ made relative to it and without the
    README's "Documentation" section (which points at the site itself)."""
    start, end = readme.index("## Documentation"), readme.index("\n## ", readme.index("## Documentation") + 3) + 1
    return (readme[:start] + readme[end:]).replace("](docs/", "](")


def test_the_home_page_is_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    home = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert home == home_page_from_readme(readme), "README.md changed: run `python tests/test_docs.py` to rewrite docs/index.md"


if __name__ == "__main__":  # rewrite docs/index.md from README.md
    (ROOT / "docs" / "index.md").write_text(home_page_from_readme((ROOT / "README.md").read_text(encoding="utf-8")),
                                            encoding="utf-8")
