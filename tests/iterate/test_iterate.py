"""`rlhf iterate` on the demo task: the scripted oracle stands in for users, its votes go into a
real SQLite store through the store's own functions (as the labelling app and the chat page
record them), and two rounds train, evaluate and record their lineage."""

from __future__ import annotations

import json
import uuid

import pytest

from rlhf.cli import main
from rlhf.config import IterateConfig, RewardConfig
from rlhf.demo.oracle import SentimentOracle
from rlhf.demo.tasks import story_prompts
from rlhf.feedback import repo
from rlhf.feedback.store import open_store
from rlhf.iterate.round import run

GOLD = "rlhf.demo.oracle:gold_reward"


def sample_pairs(model_dir, prompts, seed):
    """Two sampled continuations per prompt from the policy in `model_dir`."""
    import torch

    from rlhf.models.load import load_causal_lm, load_tokenizer
    from rlhf.rollout.generate import SamplingConfig, sample_responses

    tokenizer, model = load_tokenizer(model_dir), load_causal_lm(model_dir).eval()
    with torch.no_grad():
        return sample_responses(model, tokenizer, prompts, SamplingConfig(8, 1.0), k=2, seed=seed)


def oracle_feedback(db, model_dir, openings, seed, chat_share=4) -> list[int]:
    """The oracle labels a pair of the policy's continuations of each opening: most in the labelling
    app's project `story` (annotator "oracle"), the last `chat_share` as the chat page records a
    regenerate-and-pick (project `story-pairs`, annotator "chat", the conversation as the prompt).
    Returns the label ids."""
    pairs = sample_pairs(model_dir, openings, seed)
    picks = SentimentOracle(temperature=0.05, seed=seed).prefer(openings, [a for a, _ in pairs], [b for _, b in pairs])
    ids = []
    with open_store(str(db))() as s:
        for n, (opening, (a, b), pick) in enumerate(zip(openings, pairs, picks)):
            chat = n >= len(openings) - chat_share
            name, annotator_name = ("story-pairs", "chat") if chat else ("story", "oracle")
            project = repo.project_by_name(s, name) or repo.create_project(s, name, "pairwise")
            annotator = repo.annotator_by_name(s, project, annotator_name, create=True)
            prompt = [{"role": "user", "content": opening}] if chat else opening
            response_ids = repo.add_prompt(s, project, prompt, [(a, str(model_dir)), (b, str(model_dir))])
            task = repo.add_task(s, project, response_ids)
            s.commit()
            label, _ = repo.save_label(s, annotator, task, uuid.uuid4().hex, outcome="win",
                                       winner_id=response_ids[pick], strength=2)
            ids.append(label.id)
    return ids


@pytest.fixture(scope="module")
def start(tiny_model_dir, tmp_path_factory):
    """Round 0: the tiny policy (a run directory with model/), a tiny causal reward model, held-out openings."""
    from rlhf.train import reward

    root = tmp_path_factory.mktemp("iterate")
    pairs = root / "rm-pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": " a happy sunny day", "rejected": " a sad day"})
                             + "\n" for p in story_prompts("train", 8, seed=3)), encoding="utf-8")
    reward.run(RewardConfig(model=str(tiny_model_dir), data=str(pairs), out=str(root / "rm0"), max_steps=2,
                            batch_size=4, max_length=64, precision="fp32", progress=False, save_every=0))
    held_out = root / "prompts-eval.jsonl"
    held_out.write_text("".join(json.dumps({"prompt": p.prompt}) + "\n" for p in story_prompts("test", 4)),
                        encoding="utf-8")
    return {"root": root, "policy_run": tiny_model_dir.parent, "rm": root / "rm0" / "model", "eval": held_out,
            "db": root / "feedback.db"}


def test_two_rounds_train_on_new_labels_only_and_record_lineage(start, tiny_model_dir):
    root, db = start["root"], start["db"]
    openings = [p.prompt for p in story_prompts("train", 24, seed=1)]
    first_ids = oracle_feedback(db, tiny_model_dir, openings[:12], seed=1)

    # round 1 through the command line: rm+ppo from a plain run directory (no gold), judged by held-out labels
    code = main(["iterate", "--from", str(start["policy_run"]), "--project", "story", "--db", str(db),
                 "--out", str(root / "round1"), "--reward-model", str(start["rm"]), "--eval-data", str(start["eval"]),
                 "--rl-steps", "2", "--rl-batch-size", "4", "--rm-batch-size", "4", "--max-new-tokens", "8",
                 "--max-length", "64", "--eval-prompts", "4", "--precision", "fp32", "--no-progress"])
    assert code == 0
    one = json.loads((root / "round1" / "lineage.json").read_text())
    assert one["round"] == 1 and one["method"] == "rm+ppo" and one["parent"]["kind"] == "run"
    assert one["parent"]["policy"] == str(tiny_model_dir.resolve())
    assert sorted(one["labels"]["ids"]) == sorted(first_ids)
    assert one["labels"]["sources"] == {"story/oracle": {"read": 8, "used": 8}, "story-pairs/chat": {"read": 4, "used": 4}}
    assert one["labels"]["comparisons"] == 12
    # never judged by the reward model trained on the same labels (issue 27 item 5): a share of the new
    # comparisons, whole prompts, was kept out of training and the new policy is judged by them
    assert one["eval"]["judge_kind"] == "held-out labels" and "rm/model" not in one["eval"]["judge"]
    heldout = [json.loads(line) for line in (root / "round1" / "data" / "heldout.jsonl").read_text().splitlines()]
    trained = [json.loads(line) for line in (root / "round1" / "data" / "comparisons.jsonl").read_text().splitlines()]
    assert len(heldout) == 2 and len(trained) == 10 and one["eval"]["n"] == 2
    assert not {json.dumps(r["prompt"]) for r in heldout} & {json.dumps(r["prompt"]) for r in trained}
    assert 0 <= one["eval"]["label_accuracy"] <= 1 and 0 <= one["eval"]["reward_model_accuracy"] <= 1
    assert one["eval"]["kl_to_parent"] >= 0 and one["judge"] == {"kind": "held-out labels", "spec": None}
    summary = json.loads((root / "round1" / "summary.json").read_text())
    assert summary["judge"].startswith("held-out labels") and (summary["trained_on"], summary["heldout"]) == (10, 2)
    for stage in ("rm", "ppo"):
        assert (root / "round1" / stage / "model" / "config.json").exists()
    assert (root / "round1" / "policy").resolve() == (root / "round1" / "ppo" / "model").resolve()
    # the round's steps ran on the pipeline runner: each finished step timed, each one's output in its log
    steps = ["labels", "rm", "ppo", "eval", "record"]
    assert list(json.loads((root / "round1" / "timings.json").read_text())) == steps
    assert all((root / "round1" / "logs" / f"{step}.log").is_file() for step in steps)
    # the comparisons the stages read are the store's labels: the chat ones keep their conversation
    assert sum(isinstance(r["prompt"], list) for r in trained + heldout) == 4

    # users of the deployed round-1 policy give more feedback; round 2 trains by DPO from round 1
    second_ids = oracle_feedback(db, root / "round1" / "policy", openings[12:], seed=2)
    run(IterateConfig(from_run=str(root / "round1"), project="story", db=str(db), out=str(root / "round2"),
                      method="dpo", judge=GOLD, dpo_batch_size=4, max_new_tokens=8, max_length=64, eval_prompts=4,
                      precision="fp32", progress=False))
    two = json.loads((root / "round2" / "lineage.json").read_text())
    assert two["round"] == 2 and two["parent"]["kind"] == "iterate"
    assert two["parent"]["policy"] == str((root / "round1" / "policy").resolve())
    assert sorted(two["labels"]["ids"]) == sorted(second_ids)  # the watermark left round 1's labels out
    assert two["labels"]["watermarks"]["before"] == one["labels"]["watermarks"]["after"]
    assert two["reward_model"] == one["reward_model"]  # DPO keeps the reward model it was given
    assert two["eval"]["judge_kind"] == "given" and two["judge"]["spec"] == GOLD and 0 <= two["eval"]["win_rate"] <= 1

    with open_store(str(db))() as s:
        rounds = repo.rounds_of(s, "story")
        assert [(r.round, r.method, r.run_dir) for r in rounds] == [
            (1, "rm+ppo", str((root / "round1").resolve())), (2, "dpo", str((root / "round2").resolve()))]
        assert rounds[1].parent_policy == rounds[0].policy
        assert [label.label_id for label in repo.labels_of_round(s, rounds[0])] == sorted(first_ids)
        assert [label.label_id for label in repo.labels_of_round(s, rounds[1])] == sorted(second_ids)
        assert rounds[1].result["win_rate"] == two["eval"]["win_rate"]

    # nothing new since round 2: a third round is refused, and nothing is trained
    with pytest.raises(ValueError, match="only 0 new comparisons"):
        run(IterateConfig(from_run=str(root / "round2"), project="story", db=str(db), out=str(root / "round3"),
                          method="dpo", judge=GOLD))

    # a finished round is never overwritten; --resume of it keeps everything and records nothing twice
    with pytest.raises(FileExistsError, match="--resume"):
        run(IterateConfig(from_run=str(root / "round1"), project="story", db=str(db), out=str(root / "round2"),
                          method="dpo", judge=GOLD))
    timings = json.loads((root / "round2" / "timings.json").read_text())
    run(IterateConfig(from_run=str(root / "round1"), project="story", db=str(db), out=str(root / "round2"),
                      method="dpo", judge=GOLD, dpo_batch_size=4, max_new_tokens=8, max_length=64, eval_prompts=4,
                      precision="fp32", progress=False, resume=True))
    resumed = json.loads((root / "round2" / "timings.json").read_text())
    assert {k: resumed[k] for k in ("labels", "dpo", "eval")} == {k: timings[k] for k in ("labels", "dpo", "eval")}
    assert json.loads((root / "round2" / "lineage.json").read_text())["labels"]["ids"] == two["labels"]["ids"]
    with open_store(str(db))() as s:
        assert len(repo.rounds_of(s, "story")) == 2


def test_resume_with_other_settings_is_refused(start, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.yaml").write_text(f"from_run: {start['policy_run']}\nproject: story\nmethod: dpo\n")
    with pytest.raises(ValueError, match=r"method: 'dpo' -> 'rm\+ppo'"):
        run(IterateConfig(from_run=str(start["policy_run"]), project="story", db=str(start["db"]), out=str(out),
                          reward_model=str(start["rm"]), eval_data=str(start["eval"]), resume=True))


def test_bad_starts_are_clear_errors(start, tmp_path):
    common = dict(project="story", db=str(tmp_path / "f.db"), out=str(tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        run(IterateConfig(from_run=str(tmp_path / "missing"), **common))
    with pytest.raises(FileNotFoundError, match="--reward-model DIR"):  # rm+ppo needs a reward model to warm-start
        run(IterateConfig(from_run=str(start["policy_run"]), eval_data=str(start["eval"]), **common))
    with pytest.raises(FileNotFoundError, match="--eval-data FILE"):
        run(IterateConfig(from_run=str(start["policy_run"]), reward_model=str(start["rm"]), **common))
    with pytest.raises(ValueError, match="no project 'nobody'"):
        run(IterateConfig(from_run=str(start["policy_run"]), reward_model=str(start["rm"]),
                          eval_data=str(start["eval"]), **{**common, "project": "nobody"}))
    assert not (tmp_path / "o").exists()  # nothing written for a round that cannot start


def test_a_small_export_trains_with_batches_it_fills(start, tiny_model_dir, tmp_path, capsys):
    """Issue 27 item 3: five new labels at the default --rm-batch-size 16 used to fail in the reward
    model after the round's folder was made; now the batch shrinks to the four training comparisons
    (one of the five is held out to judge by)."""
    db, out = tmp_path / "small.db", tmp_path / "round1"
    oracle_feedback(db, tiny_model_dir, [p.prompt for p in story_prompts("train", 5, seed=4)], seed=4, chat_share=0)
    code = main(["iterate", "--from", str(start["policy_run"]), "--project", "story", "--db", str(db),
                 "--out", str(out), "--reward-model", str(start["rm"]), "--eval-data", str(start["eval"]),
                 "--min-pairs", "1", "--rl-steps", "1", "--max-new-tokens", "8", "--max-length", "64",
                 "--eval-prompts", "4", "--precision", "fp32", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "4 comparisons to train on, fewer than --rm-batch-size 16: batches of 4" in capsys.readouterr().out
    assert "batch_size: 4" in (out / "rm" / "config.yaml").read_text()
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["eval"]["judge_kind"] == "held-out labels" and lineage["eval"]["n"] == 1


def test_one_label_without_a_judge_is_refused_before_anything_is_written(start, tiny_model_dir, tmp_path):
    db, out = tmp_path / "one.db", tmp_path / "round1"
    oracle_feedback(db, tiny_model_dir, [story_prompts("train", 1, seed=5)[0].prompt], seed=5, chat_share=0)
    with pytest.raises(ValueError, match="too few to hold 20% out .*--judge SCORER"):
        run(IterateConfig(from_run=str(start["policy_run"]), project="story", db=str(db), out=str(out),
                          reward_model=str(start["rm"]), eval_data=str(start["eval"]), min_pairs=1))
    assert not out.exists()
