"""The asynchronous sampler (rlhf.rollout.async_sampler) on a stand-in sampler: the staleness of
each step, weights through shared memory, a checkpoint's rollouts as plain values, and a worker
that raises, dies or hangs ending the caller's wait with an error, never a hang."""

import sys
import time

import pytest
import torch

from rlhf.data.records import Message, Prompt, Rollout
from rlhf.rollout.async_sampler import (AsyncSampler, load_packed_weights, pack_weights, sampled_from_state,
                                        sampled_state, split_threads)
from rlhf.rollout.experience import Sampled
from rlhf.rollout.sampler import Sampler

# The worker process imports its builders by name: they live in a module on sys.path (spawn passes it on).
WORKERS = '''
import os, time
import torch
from rlhf.data.records import Rollout
from rlhf.rollout.experience import Sampled
from rlhf.rollout.sampler import Sampler


class WeightEcho(Sampler):
    """One row per prompt whose score is the policy's weight (which version sampled it) and whose
    log-prob is the step (which step's noise)."""
    k = 1

    def sample(self, policy, prompts, step):
        n = len(prompts)
        w = float(policy.weight.flatten()[0])
        rollout = Rollout(torch.ones(n, 2, dtype=torch.long), torch.ones(n, 2, dtype=torch.long),
                          torch.ones(n, 3, dtype=torch.long), torch.ones(n, 3, dtype=torch.long),
                          torch.full((n, 3), float(step)), torch.ones(n, dtype=torch.bool))
        return Sampled(rollout, [p.prompt for p in prompts], [p.answer for p in prompts], ["r"] * n,
                       torch.full((n,), w), torch.full((n,), w), stats={"inner": 1.0})


class Dies(WeightEcho):
    def sample(self, policy, prompts, step):
        os._exit(3)


class Hangs(WeightEcho):
    def sample(self, policy, prompts, step):
        time.sleep(3600)


def echo():
    return torch.nn.Linear(1, 1, bias=False), WeightEcho()


def dies():
    return torch.nn.Linear(1, 1, bias=False), Dies()


def hangs():
    return torch.nn.Linear(1, 1, bias=False), Hangs()


def raises():
    raise ValueError("broken on purpose")
'''


class Local(Sampler):
    k, scorer = 1, None

    def sample(self, policy, prompts, step):
        raise AssertionError("the local sampler samples nothing")


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    root = tmp_path_factory.mktemp("async-workers")
    (root / "async_test_workers.py").write_text(WORKERS, encoding="utf-8")
    sys.path.insert(0, str(root))
    import async_test_workers

    yield async_test_workers
    sys.path.remove(str(root))


def schedule(step):
    return [Prompt(f"prompt of step {step}")]


def policy_at(value):
    policy = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        policy.weight.fill_(value)
    return policy


def test_staleness_bound_and_weights_of_each_step(workers):
    """K=2: steps 0..2 are sampled by the weights of step 0, step 3 by those of step 1, ...: step t
    trains on samples K updates old (fewer at first), each with its own step's noise."""
    with AsyncSampler(Local(), workers.echo, staleness=2, prompts_of=schedule, steps=5, timeout_s=60) as sampler:
        got = []
        for step in range(5):
            s = sampler.sample(policy_at(10.0 * step), schedule(step), step)  # the weights "after `step` updates"
            got.append((float(s.score[0]), float(s.rollout.logprobs[0, 0]), s.stats["async/staleness"]))
            assert s.stats["inner"] == 1.0 and s.prompts == [f"prompt of step {step}"]
        assert got == [(0.0, 0, 0), (0.0, 1, 1), (0.0, 2, 2), (10.0, 3, 2), (20.0, 4, 2)]
        assert not sampler.in_flight  # nothing submitted past the last step
        assert sampler.summary()["mean_staleness"] == pytest.approx(7 / 5)
        process = sampler.process
    assert not process.is_alive()


def test_checkpoint_keeps_the_rollouts_ahead_and_a_resumed_sampler_continues(workers, tmp_path):
    straight = AsyncSampler(Local(), workers.echo, staleness=1, prompts_of=schedule, steps=4, timeout_s=60)
    with straight:
        first = [float(straight.sample(policy_at(step), schedule(step), step).score[0]) for step in range(2)]
        path = tmp_path / "state.pt"
        torch.save(straight.state_dict(), path)
        rest = [float(straight.sample(policy_at(step), schedule(step), step).score[0]) for step in range(2, 4)]
    resumed = AsyncSampler(Local(), workers.echo, staleness=1, prompts_of=schedule, steps=4, timeout_s=60)
    resumed.load_state_dict(torch.load(path, weights_only=True))  # plain values only
    assert sorted(resumed.ready) == [2]  # step 2, sampled ahead by the weights of step 1
    with resumed:
        again = [float(resumed.sample(policy_at(step), schedule(step), step).score[0]) for step in range(2, 4)]
    assert first == [0.0, 0.0] and rest == again == [1.0, 2.0]
    assert resumed.summary()["mean_staleness"] == straight.summary()["mean_staleness"] == pytest.approx(3 / 4)


def test_prompts_off_the_schedule_are_refused(workers):
    with AsyncSampler(Local(), workers.echo, staleness=1, prompts_of=schedule, steps=3, timeout_s=60) as sampler:
        with pytest.raises(RuntimeError, match="differ from the schedule"):
            sampler.sample(policy_at(0), [Prompt("something else")], 0)


@pytest.mark.parametrize("builder, message", [("raises", "ValueError: broken on purpose"),
                                              ("dies", r"died \(exit code 3\)"),
                                              ("hangs", "sent nothing for 3 s")])
def test_a_broken_worker_ends_the_wait_with_an_error(workers, builder, message):
    sampler = AsyncSampler(Local(), getattr(workers, builder), staleness=1, prompts_of=schedule, steps=3,
                           timeout_s=3)
    t = time.monotonic()
    with pytest.raises(RuntimeError, match=message):
        sampler.sample(policy_at(0), schedule(0), 0)
    assert time.monotonic() - t < 60  # start-up (importing torch) plus the timeout, not forever
    assert sampler.process is None  # closed: killed where it would not stop


def test_packed_weights_round_trip():
    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    source.register_buffer("steps", torch.tensor([7]))
    target.register_buffer("steps", torch.tensor([0]))
    layout, flats = pack_weights(source)
    assert set(flats) == {torch.float32, torch.int64} and flats[torch.float32].numel() == 8
    load_packed_weights(target, (layout, flats))
    for name, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], value)


def test_sampled_as_plain_values_round_trip(tmp_path):
    rollout = Rollout(torch.tensor([[1, 2]]), torch.tensor([[1, 1]]), torch.tensor([[3, 0]]), torch.tensor([[1, 0]]),
                      torch.tensor([[-0.5, 0.0]]), torch.tensor([True]))
    conversation = (Message("user", "hi"),)
    s = Sampled(rollout, [conversation], ["42"], ["hello"], torch.tensor([1.5]), torch.tensor([0.5]),
                {"format": torch.tensor([1.0])}, {"reward_std": 0.25}, [{"turns": 2}])
    torch.save(sampled_state(s), tmp_path / "s.pt")
    back = sampled_from_state(torch.load(tmp_path / "s.pt", weights_only=True))
    assert back.prompts == [conversation] and back.answers == ["42"] and back.responses == ["hello"]
    assert back.details == [{"turns": 2}] and back.stats == {"reward_std": 0.25}
    assert torch.equal(back.rollout.logprobs, rollout.logprobs) and torch.equal(back.rollout.ended, rollout.ended)
    assert torch.equal(back.parts["format"], torch.tensor([1.0])) and torch.equal(back.raw, s.raw)


def test_the_learner_keeps_its_threads_and_the_worker_takes_half():
    assert split_threads(1) == (1, 1)  # one core: they share it
    assert split_threads(2) == (2, 1)
    assert split_threads(5) == (5, 2)
