"""`rlhf judge` and `rlhf judge revise` end to end through the CLI, against a fake OpenAI-compatible
endpoint (tests/labelers/fake_judge_server.py) and a local model directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "labelers"))  # fake_judge_server, under --import-mode=importlib

from fake_judge_server import FakeJudgeServer  # noqa: E402

from rlhf.cli import main  # noqa: E402
from rlhf.data.formats import read_comparisons, read_demonstrations  # noqa: E402


@pytest.fixture
def server():
    with FakeJudgeServer() as s:
        yield s


@pytest.fixture(scope="module")
def candidates(tiny_model_dir, tmp_path_factory) -> Path:
    """What `rlhf generate` writes without --label: {"prompt", "responses"} rows."""
    tmp = tmp_path_factory.mktemp("candidates")
    (tmp / "prompts.txt").write_text("Once upon a time\nThe dog\nTom had a red ball.\n", encoding="utf-8")
    out = tmp / "candidates.jsonl"
    assert main(["generate", "--model", str(tiny_model_dir), "--data", str(tmp / "prompts.txt"), "--out", str(out),
                 "--num-samples", "4", "--max-new-tokens", "12", "--precision", "fp32"]) == 0
    return out


def judge_args(server, data, out):
    return ["judge", "--data", str(data), "--out", str(out), "--api-base", server.url, "--api-model", "judge-x"]


def test_judge_writes_comparisons_and_a_summary_and_reruns_from_the_cache(server, candidates, tmp_path, capsys):
    out = tmp_path / "judged.jsonl"
    assert main(judge_args(server, candidates, out)) == 0
    rows = [json.loads(line) for line in candidates.read_text().splitlines()]
    pairs = [(r["prompt"], r["responses"][j], r["responses"][j + 1]) for r in rows for j in (0, 2)]
    summary = json.loads((tmp_path / "judged.jsonl.summary.json").read_text())
    assert summary["pairs"] == 6 and summary["requests"] == 12 and summary["cache_hits"] == 0
    assert server.requests == 12  # every pair in both orders
    expected = [{"prompt": p, "chosen": max(a, b, key=len), "rejected": min(a, b, key=len)}
                for p, a, b in pairs if len(a) != len(b)]
    assert [json.loads(line) for line in out.read_text().splitlines()] == expected
    assert summary["ties"] == 6 - len(expected) and summary["comparisons"] == len(expected)
    assert summary["position_bias"] == 0.5
    assert len(read_comparisons(out)) == len(expected)  # what rm and dpo read
    assert "position bias (first-position wins) 0.50" in capsys.readouterr().out
    first = out.read_text()
    assert main(judge_args(server, candidates, out)) == 0  # rerun: the cache answers, no request
    summary = json.loads((tmp_path / "judged.jsonl.summary.json").read_text())
    assert server.requests == 12 and summary["requests"] == 0 and summary["cache_hits"] == 12
    assert out.read_text() == first


def test_judge_rejudges_comparisons_with_a_position_biased_judge(server, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "short", "rejected": "much longer"}) + "\n"
                            for i in range(3)))
    server.mode = "first"
    out = tmp_path / "judged.jsonl"
    assert main(judge_args(server, data, out)) == 1  # nothing usable is a failure, not an empty file
    summary = json.loads((tmp_path / "judged.jsonl.summary.json").read_text())
    assert summary["ties"] == 3 and summary["position_bias"] == 1.0 and summary["flipped_pairs"] == 3
    assert not out.exists()
    err = capsys.readouterr().err
    assert "no usable verdict: 3 pairs -> 0 comparisons (3 pairs whose verdict flipped with the order)" in err
    assert "position bias 1.00" in err and "stronger judge" in err


def test_judge_garbage_is_a_clear_error(server, candidates, tmp_path, capsys):
    server.mode = "garbage"
    assert main(judge_args(server, candidates, tmp_path / "j.jsonl") + ["--retries", "1"]) == 1
    err = capsys.readouterr().err
    assert "rlhf judge: error:" in err and "malformed answer for pair 0" in err and "after 2 attempts" in err


def test_judge_with_a_local_model(tiny_model_dir, candidates, tmp_path, capsys):
    out = tmp_path / "j.jsonl"
    args = ["judge", "--data", str(candidates), "--out", str(out), "--model", str(tiny_model_dir),
            "--max-new-tokens", "4", "--retries", "0", "--device", "cpu"]
    assert main(args) == 1 and "malformed answer for pair 0" in capsys.readouterr().err
    assert main(args + ["--on-malformed", "tie"]) == 1  # no usable verdict; the malformed answers come from the cache
    summary = json.loads((tmp_path / "j.jsonl.summary.json").read_text())
    assert summary["malformed"] == 12 and summary["ties"] == 6 and summary["judge"].startswith("local:")
    assert summary["requests"] == 0 and summary["malformed_cached"] == 12
    err = capsys.readouterr().err
    assert "no usable verdict: 6 pairs -> 0 comparisons (12 answers malformed)" in err and "--model DIR" in err


def test_judge_needs_one_backend(candidates, tmp_path, capsys):
    assert main(["judge", "--data", str(candidates), "--out", str(tmp_path / "j.jsonl")]) == 1
    assert "--model" in capsys.readouterr().err


def test_revise_writes_demonstrations_and_pairs(server, candidates, tmp_path):
    out, pairs = tmp_path / "revisions.jsonl", tmp_path / "cai_pairs.jsonl"
    args = ["judge", "revise", "--data", str(candidates), "--out", str(out), "--pairs", str(pairs),
            "--api-base", server.url, "--api-model", "judge-x"]
    assert main(args) == 0
    originals = [(r["prompt"], resp) for r in map(json.loads, candidates.read_text().splitlines()) for resp in r["responses"]]
    assert server.requests == 2 * len(originals)  # a critique, then a revision, per response
    demos = read_demonstrations(out)  # what `rlhf sft` reads
    assert [(d.prompt, d.completion) for d in demos] == [(p, f"{r} Everyone was kind.".strip()) for p, r in originals]
    comparisons = read_comparisons(pairs)  # the revision preferred over the original
    assert [(c.prompt, c.chosen, c.rejected) for c in comparisons] == [(d.prompt, d.completion, r)
                                                                       for d, (_, r) in zip(demos, originals)]
    summary = json.loads((tmp_path / "revisions.jsonl.summary.json").read_text())
    assert summary["revisions"] == len(originals) and sum(summary["principles"].values()) == len(originals)
    assert main(args) == 0 and server.requests == 2 * len(originals)  # rerun from the cache


def test_revise_samples_principles_from_the_constitution_by_seed(server, tmp_path):
    constitution = tmp_path / "c.yaml"
    constitution.write_text("principles:\n"
                            "  - {name: one, critique: 'Is it rude?', revision: 'Make it polite.'}\n"
                            "  - {name: two, critique: 'Is it false?', revision: 'Make it true.'}\n")
    data = tmp_path / "demos.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}", "completion": f"answer {i}"}) + "\n" for i in range(8)))

    def principles(seed):
        out = tmp_path / f"rev-{seed}.jsonl"
        assert main(["judge", "revise", "--data", str(data), "--out", str(out), "--constitution", str(constitution),
                     "--seed", str(seed), "--api-base", server.url, "--api-model", "judge-x"]) == 0
        return json.loads((tmp_path / f"rev-{seed}.jsonl.summary.json").read_text())["principles"]

    assert principles(0) == principles(0) and set(principles(0)) == {"one", "two"} and sum(principles(1).values()) == 8
    bad = tmp_path / "bad.yaml"
    for text in ("principles:\n  - {name: x, critique: ''}\n", "principles: [{name: x, critique: a?, b}]\n"):
        bad.write_text(text)  # an empty request; YAML that does not parse
        assert main(["judge", "revise", "--data", str(data), "--out", str(tmp_path / "r.jsonl"), "--constitution",
                     str(bad), "--api-base", server.url, "--api-model", "judge-x"]) == 1


def test_default_constitution_ships_with_the_package():
    from rlhf.labelers.judge_command import load_constitution

    principles = load_constitution("default")
    assert len(principles) >= 4 and all(p["critique"] and p["revision"] for p in principles)


def test_generate_labels_with_the_judge(server, tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once upon a time\nThe dog\nTom had a red ball.\n", encoding="utf-8")
    out = tmp_path / "pairs.jsonl"
    label = f"judge:{server.url}?model=judge-x&cache={tmp_path / 'cache.jsonl'}"
    assert main(["generate", "--model", str(tiny_model_dir), "--data", str(prompts), "--out", str(out),
                 "--num-samples", "4", "--max-new-tokens", "12", "--precision", "fp32", "--label", label]) == 0
    assert server.requests == 12  # six pairs, both orders
    comparisons = read_comparisons(out)
    assert comparisons and all(len(c.chosen) > len(c.rejected) for c in comparisons)
    printed = capsys.readouterr().out
    ties = 6 - len(comparisons)
    assert (f"({ties} tied pairs skipped" in printed) == (ties > 0)
