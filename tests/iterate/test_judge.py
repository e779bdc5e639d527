"""Who judges an `rlhf iterate` round (rlhf.iterate.judge): never the reward model trained on the
round's own labels (issue 27 item 5)."""

from __future__ import annotations

import json

import pytest

from rlhf.config import IterateConfig
from rlhf.iterate.judge import GIVEN, GOLD, HELDOUT, Judge, choose_judge, recorded_gold, split_heldout
from rlhf.iterate.parent import Parent

ORACLE = "rlhf.demo.oracle:gold_reward"


def parent_in(run_dir, kind="demo") -> Parent:
    return Parent(run_dir, kind, 0, run_dir / "sft" / "model", run_dir / "rm" / "model", run_dir / "eval.jsonl")


def cfg(**fields) -> IterateConfig:
    return IterateConfig(from_run="unused", project="story", **fields)


def test_gold_recorded_by_the_current_round_is_the_default(tmp_path):
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "config.yaml").write_text("model: base\ngold: null\n")
    (tmp_path / "ppo").mkdir()
    (tmp_path / "ppo" / "config.yaml").write_text(f"model: sft/model\ngold: {ORACLE}\n")
    parent = parent_in(tmp_path)
    assert recorded_gold(parent) == ORACLE
    assert choose_judge(cfg(), parent, tmp_path / "out" / "rm" / "model") == Judge(GOLD, ORACLE)
    assert choose_judge(cfg(judge="my.module:score"), parent, None) == Judge(GIVEN, "my.module:score")  # flags win
    # an iterate round passes the gold on in its lineage
    (tmp_path / "round1").mkdir()
    (tmp_path / "round1" / "lineage.json").write_text(json.dumps({"round": 1, "gold": ORACLE}))
    assert recorded_gold(parent_in(tmp_path / "round1", kind="iterate")) == ORACLE


def test_without_gold_or_judge_held_out_labels_judge(tmp_path):
    parent, own = parent_in(tmp_path), tmp_path / "out" / "rm" / "model"
    judge = choose_judge(cfg(), parent, own)
    assert judge.kind == HELDOUT and judge.spec is None and "held-out labels" in judge.describe()
    with pytest.raises(ValueError, match="no gold scorer and --holdout is 0.*--judge SCORER"):
        choose_judge(cfg(holdout=0.0), parent, own)


def test_the_reward_model_trained_on_the_same_labels_is_refused_as_judge(tmp_path):
    own = tmp_path / "out" / "rm" / "model"
    with pytest.raises(ValueError, match="the reward model this round trains on the same labels"):
        choose_judge(cfg(judge=str(own)), parent_in(tmp_path), own)
    # the current round's reward model, not trained on the new labels, may judge when asked for
    assert choose_judge(cfg(judge=str(tmp_path / "rm" / "model")), parent_in(tmp_path), own).kind == GIVEN


def test_split_holds_out_whole_prompts():
    rows = [{"prompt": f"p{i // 2}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(10)]  # 5 prompts x 2
    train, held = split_heldout(rows, 0.2, seed=0)
    assert len(held) == 2 and len(train) == 8 and len({r["prompt"] for r in held}) == 1
    assert not {r["prompt"] for r in held} & {r["prompt"] for r in train}
    assert split_heldout(rows, 0.2, seed=0) == (train, held)  # seeded
    with pytest.raises(ValueError, match="too few to hold"):
        split_heldout(rows[:2], 0.2, seed=0)  # one prompt: nothing left to train on
    with pytest.raises(ValueError, match="holdout"):
        cfg(holdout=1.0)
