"""Labelling sampled responses into comparisons: a tie says nothing, so it is skipped and counted."""

from rlhf.labelers.pairs import label_pairs


def test_scorer_ties_are_skipped_and_counted(tmp_path, monkeypatch):
    (tmp_path / "length_scorer.py").write_text(
        "def score(prompts, responses):\n    return [float(len(r)) for r in responses]\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    responses = [["aa", "bbbb", "cc", "dd"],  # pairs (aa, bbbb): bbbb wins; (cc, dd): a tie
                 ["eee", "f"]]                # (eee, f): eee wins
    rows, ties = label_pairs(["p", "q"], responses, "length_scorer:score", oracle_temperature=0.0, seed=0)
    assert ties == 1
    assert rows == [{"prompt": "p", "chosen": "bbbb", "rejected": "aa"},
                    {"prompt": "q", "chosen": "eee", "rejected": "f"}]


def test_oracle_labels_every_pair():
    rows, ties = label_pairs(["p"], [["What a happy, wonderful day.", "It was awful."]], "oracle",
                             oracle_temperature=0.0, seed=0)
    assert ties == 0 and rows[0]["chosen"] == "What a happy, wonderful day."


def test_online_dpo_round_record_counts_ties_for_the_oracle_too():
    from rlhf.train.online_dpo import PairLabeler

    rows, info = PairLabeler("oracle", 0.0, "cpu")(["p"], [["A happy day.", "A sad day.", "Fine.", "Bad."]], seed=0)
    assert len(rows) == 2 and info["labels"] == 2 and info["ties_skipped"] == 0


def test_generate_reports_ties(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from rlhf.cli import main

    (tmp_path / "constant_scorer.py").write_text("def score(prompts, responses):\n    return [1.0] * len(responses)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once upon a time\nThe dog\n")
    out = tmp_path / "pairs.jsonl"
    code = main(["generate", "--model", str(tiny_model_dir), "--data", str(prompts), "--out", str(out),
                 "--num-samples", "4", "--max-new-tokens", "3", "--label", "constant_scorer:score", "--precision", "fp32"])
    assert code == 1 and "4 ties" in capsys.readouterr().err and not out.exists()
