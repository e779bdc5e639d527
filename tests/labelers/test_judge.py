"""The AI judge against a fake OpenAI-compatible endpoint (tests/labelers/fake_judge_server.py) and
a local model directory: both orders asked, flips are ties, position bias, cache, strict parsing."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for `import fake_judge_server` under --import-mode=importlib

from fake_judge_server import FakeJudgeServer  # noqa: E402

from rlhf.labelers.judge_backends import JudgeEndpointError  # noqa: E402
from rlhf.labelers.judge import (JudgeError, build_judge, parse_critique, parse_rating, parse_revision,  # noqa: E402
                                 parse_verdict)

PROMPTS = ["Once upon a time", "The dog", "Sue liked"]
FIRSTS = ["a cat sat on the big mat", "ran", "to sing"]
SECONDS = ["a cat", "ran to the park and played all day", "to sing songs with her friends"]  # longer wins
LONGER = [0, 1, 1]


@pytest.fixture
def server():
    with FakeJudgeServer() as s:
        yield s


def api_judge(server, tmp_path, **kw):
    return build_judge(api_base=server.url, api_model=kw.pop("api_model", "judge-x"),
                       cache=kw.pop("cache", tmp_path / "cache.jsonl"), **kw)


def test_both_orders_asked_and_consistent_verdicts_kept(server, tmp_path):
    judge = api_judge(server, tmp_path)
    picks = judge.prefer(PROMPTS, FIRSTS, SECONDS)
    assert picks == LONGER
    assert server.requests == 2 * len(PROMPTS)  # every pair in both orders
    assert server.models_asked == ["judge-x"] * 6
    # a fair judge picks the first position in exactly one of the two orders of each pair
    assert judge.stats.position_bias == 0.5 and judge.stats.decisive == 6


def test_order_flipping_judge_gives_ties_and_position_bias_one(server, tmp_path):
    server.mode = "first"
    judge = api_judge(server, tmp_path)
    assert judge.prefer(PROMPTS, FIRSTS, SECONDS) == [None, None, None]
    assert judge.stats.position_bias == 1.0


def test_equal_responses_tie(server, tmp_path):
    assert api_judge(server, tmp_path).prefer(["p"], ["same"], ["same"]) == [None]  # [[C]] both ways


def test_rerun_hits_the_cache_and_makes_no_request(server, tmp_path):
    first = api_judge(server, tmp_path).prefer(PROMPTS, FIRSTS, SECONDS)
    asked = server.requests
    again = api_judge(server, tmp_path)  # a fresh judge on the same cache file
    assert again.prefer(PROMPTS, FIRSTS, SECONDS) == first
    assert server.requests == asked and again.stats.requests == 0 and again.stats.cache_hits == 6
    other = api_judge(server, tmp_path, api_model="judge-y")  # another judge model misses the cache
    other.prefer(PROMPTS, FIRSTS, SECONDS)
    assert other.stats.requests == 6 and server.requests == asked + 6


def test_endpoint_requests_go_together_and_a_run_stopped_midway_keeps_its_answers(server, tmp_path):
    prompts, firsts, seconds = PROMPTS * 4, FIRSTS * 4, [s + f" {i}" for i, s in enumerate(SECONDS * 4)]
    server.delay, server.fail_after = 0.2, 10  # 24 requests asked 4 at a time: groups 1-2 answered, group 3 refused
    with pytest.raises(JudgeEndpointError, match="the judge is gone"):
        api_judge(server, tmp_path, concurrency=4).prefer(prompts, firsts, seconds)
    assert server.max_in_flight == 4  # a batching server gets them together
    assert len((tmp_path / "cache.jsonl").read_text().splitlines()) == 8  # the two full groups, kept
    server.fail_after, before = None, server.requests
    again = api_judge(server, tmp_path, concurrency=4)
    again.prefer(prompts, firsts, seconds)
    assert again.stats.cache_hits == 8 and again.stats.requests == 16 and server.requests == before + 16


def test_garbage_answers_are_retried_then_a_clear_error_and_cached(server, tmp_path):
    server.mode = "garbage"
    judge = api_judge(server, tmp_path, retries=2)
    with pytest.raises(JudgeError, match=r"malformed answer for pair 0 \(prompt 'Once upon a time'\).*after 3 attempts"
                                         r".*2 of 2 answers malformed.*instruction-tuned.*--retries 3 or more"):
        judge.prefer(PROMPTS[:1], FIRSTS[:1], SECONDS[:1])
    assert server.requests == 2 * 3 and server.seeds == [0, 0, 1, 1, 2, 2]  # both orders, attempts 0, 1, 2
    again = api_judge(server, tmp_path, retries=2)  # a rerun: the malformed answers come from the cache
    with pytest.raises(JudgeError, match="after 3 attempts"):
        again.prefer(PROMPTS[:1], FIRSTS[:1], SECONDS[:1])
    assert server.requests == 6 and again.stats.requests == 0 and again.stats.malformed_cached == 2
    more = api_judge(server, tmp_path, retries=3)  # one more attempt each, with a seed not asked before
    with pytest.raises(JudgeError, match="after 4 attempts"):
        more.prefer(PROMPTS[:1], FIRSTS[:1], SECONDS[:1])
    assert server.requests == 8 and server.seeds[6:] == [3, 3] and more.stats.retries == 2
    longer = api_judge(server, tmp_path, retries=0, max_new_tokens=128)  # room for a longer answer: asked afresh
    with pytest.raises(JudgeError, match="after 1 attempts"):
        longer.prefer(PROMPTS[:1], FIRSTS[:1], SECONDS[:1])
    assert server.requests == 10


def test_garbage_as_tie_is_counted(server, tmp_path):
    server.mode = "garbage"
    judge = api_judge(server, tmp_path, retries=0, on_malformed="tie")
    assert judge.prefer(PROMPTS, FIRSTS, SECONDS) == [None] * 3
    assert judge.stats.malformed == 6 and judge.stats.position_bias is None


def test_a_retry_that_parses_is_used(server, tmp_path):
    server.mode = "garbage-once"  # garbage at temperature 0, a verdict when sampled on the retry
    judge = api_judge(server, tmp_path, retries=1)
    assert judge.prefer(PROMPTS, FIRSTS, SECONDS) == LONGER
    assert judge.stats.retries == 6 and server.requests == 12


def test_scores_and_the_module_function_scorer(server, tmp_path, monkeypatch):
    from rlhf.rollout.scorers import load_scorer

    judge = api_judge(server, tmp_path)
    assert judge.score(["p", "q"], ["abc", "x" * 40]) == [2.0, 10.0]
    monkeypatch.setenv("RLHF_JUDGE", f"{server.url}?model=judge-x&cache={tmp_path / 'scores.jsonl'}")
    scorer = load_scorer("rlhf.labelers.judge:score")
    assert scorer(["p"], ["abcd"]).tolist() == [3.0]


def test_registered_as_a_labeler(server, tmp_path):
    from rlhf.config import GenerateConfig
    from rlhf.labelers.pairs import is_named_labeler, label_pairs
    from rlhf.doctor.inputs import check_models
    from rlhf.train.online_dpo import PairLabeler

    spec = f"judge:{server.url}?model=judge-x&cache={tmp_path / 'c.jsonl'}"
    assert is_named_labeler(spec) and not is_named_labeler("rlhf.demo.oracle:gold_reward")
    rows, ties = label_pairs(PROMPTS[:2], [[FIRSTS[0], SECONDS[0], "same", "same"], [FIRSTS[1], SECONDS[1]]],
                             spec, oracle_temperature=0.0, seed=0)
    assert ties == 1  # ("same", "same")
    assert rows == [{"prompt": PROMPTS[0], "chosen": FIRSTS[0], "rejected": SECONDS[0]},
                    {"prompt": PROMPTS[1], "chosen": SECONDS[1], "rejected": FIRSTS[1]}]
    check_models("generate", GenerateConfig(model=None, data="x", label=spec))  # the spec is not a scorer to import
    rows, info = PairLabeler(spec, 0.0, "cpu")(PROMPTS[:1], [[FIRSTS[0], SECONDS[0]]], seed=0)  # online DPO
    assert rows[0]["chosen"] == FIRSTS[0] and info["ties_skipped"] == 0


def test_parsing_is_strict():
    assert parse_verdict("so [[B]]") == "B" and parse_verdict("[[C]]") == "C"
    assert parse_verdict("[[A]] or maybe [[B]]") is None and parse_verdict("[A]") is None
    assert parse_verdict("[[ A ]]") is None and parse_verdict("A") is None
    assert parse_rating("Rating: [[7]]") == 7 and parse_rating("Rating: [[10]]") == 10
    assert parse_rating("Rating: [[11]]") is None and parse_rating("Rating: [[0]]") is None
    assert parse_rating("7/10") is None and parse_rating("Rating: [[3]] Rating: [[4]]") is None
    assert parse_revision("Revision: better text") == "better text" and parse_revision("better text") is None
    assert parse_revision("Revision:   ") is None and parse_critique("Critique: rude") == "rude"


def test_local_model_judge(tiny_model_dir, tmp_path):
    """The tiny model never writes a verdict: the local path asks both orders, retries (sampled),
    then names the pair; as ties it counts every malformed answer, from the cache (asked once)."""
    judge = build_judge(model=str(tiny_model_dir), cache=tmp_path / "c.jsonl", retries=1, max_new_tokens=6)
    assert judge.backend.identity.startswith("local:")
    with pytest.raises(JudgeError, match=r"pair 0 \(prompt 'Once upon a time'\).*after 2 attempts"):
        judge.prefer(PROMPTS[:2], FIRSTS[:2], SECONDS[:2])
    assert judge.stats.requests == 2 * 2 * 2  # two pairs, both orders, two attempts
    tied = build_judge(model=str(tiny_model_dir), cache=tmp_path / "c.jsonl", retries=0, max_new_tokens=6,
                       on_malformed="tie")
    assert tied.prefer(PROMPTS[:2], FIRSTS[:2], SECONDS[:2]) == [None, None]
    assert tied.stats.malformed == 4 and tied.stats.requests == 0 and tied.stats.malformed_cached == 4
    assert all(math.isnan(s) for s in tied.score(PROMPTS[:1], FIRSTS[:1]))


class ScriptedModel:
    """A local backend that answers like a model would, by rule: the judge logic on the local path."""

    identity = "local:scripted"

    def __init__(self):
        self.calls = []

    def complete(self, texts, attempt=0):
        from fake_judge_server import rule

        self.calls.append(len(texts))
        return [rule("longer", t, 0.0) for t in texts]


def test_local_backend_protocol_with_a_scripted_model(tmp_path):
    from rlhf.labelers.judge import AnswerCache, Judge

    model = ScriptedModel()
    judge = Judge(model, AnswerCache(tmp_path / "c.jsonl"))
    assert judge.prefer(PROMPTS, FIRSTS, SECONDS) == LONGER
    assert model.calls == [6]  # one batch: every pair in both orders


def test_room_left_reads_the_request_and_the_context_from_the_servers_message():
    from rlhf.labelers.judge_backends import room_left

    serve = "max_tokens 256 + the prompt's 291 tokens exceed this model's context of 512 tokens"  # rlhf serve
    vllm = ("This model's maximum context length is 512 tokens. However, you requested 547 tokens (291 in the "
            "messages, 256 in the completion). Please reduce the length of the messages or completion.")  # and OpenAI
    vllm_010 = ("'max_tokens' or 'max_completion_tokens' is too large: 256. This model's maximum context length is "
                "512 tokens and your request has 291 input tokens (256 > 512 - 291).")
    for message in (serve, vllm, vllm_010):
        assert room_left(message) == (512 - 291, 512)
    assert room_left(serve, context=1024) == (1024 - 291, 1024)  # the model card's context wins
    assert room_left("the prompt is 600 tokens; this model's context is 512 tokens") == (-88, 512)  # cannot fit
    assert room_left("max_tokens must be at least 1, got 0") is None  # not about the context
