"""`rlhf generate`: candidates to label, and oracle-labelled comparisons the rm stage reads."""

import json
import re

from rlhf.cli import main
from rlhf.data.formats import read_comparisons
from rlhf.demo.oracle import gold_reward

PROMPTS = ["Once upon a time", "The dog", "Tom had a red ball.", "Sue liked", "The cat"]


def prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return path


def test_candidates_without_labels(tiny_model_dir, tmp_path):
    out = tmp_path / "candidates.jsonl"
    args = ["generate", "--model", str(tiny_model_dir), "--data", str(prompts_file(tmp_path)), "--out", str(out),
            "--num-samples", "3", "--max-new-tokens", "6", "--precision", "fp32"]
    assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == PROMPTS and all(len(r["responses"]) == 3 for r in rows)
    first = out.read_text()
    assert main(args) == 0 and out.read_text() == first  # the seed fixes the samples


def test_noiseless_oracle_labels_pairs(tiny_model_dir, tmp_path):
    out = tmp_path / "pairs.jsonl"
    assert main(["generate", "--model", str(tiny_model_dir), "--data", str(prompts_file(tmp_path)), "--out", str(out),
                 "--num-samples", "4", "--max-new-tokens", "10", "--label", "oracle", "--oracle-temperature", "0",
                 "--precision", "fp32"]) == 0
    comparisons = read_comparisons(out)
    assert len(comparisons) == 2 * len(PROMPTS)  # 4 samples -> 2 disjoint pairs per prompt
    chosen = gold_reward([c.prompt for c in comparisons], [c.chosen for c in comparisons])
    rejected = gold_reward([c.prompt for c in comparisons], [c.rejected for c in comparisons])
    assert all(c >= r for c, r in zip(chosen, rejected))


def test_scorer_labels_pairs(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    assert main(["generate", "--model", str(tiny_model_dir), "--data", str(prompts_file(tmp_path)), "--out", str(out),
                 "--num-samples", "2", "--max-new-tokens", "10", "--label", "rlhf.demo.oracle:gold_reward",
                 "--precision", "fp32"]) == 0
    comparisons = read_comparisons(out)
    printed = capsys.readouterr().out
    ties = int(re.search(r"\((\d+) tied pairs skipped", printed).group(1)) if "tied pairs" in printed else 0
    assert len(comparisons) + ties == len(PROMPTS)  # one pair per prompt: labelled, or a tie skipped and counted
    assert all(gold_reward([""], [c.chosen])[0] > gold_reward([""], [c.rejected])[0] for c in comparisons)
