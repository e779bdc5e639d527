"""The second embedded task: arithmetic with a verifiable reward.

Problems are additions and subtractions of small whole numbers written as a prompt "47+38=";
the answer is the number ("85"). The reward is a program, not a model: the prompt rows carry
their answer ({"prompt": "47+38=", "answer": "85"}) and RL scores responses with the library's
exact match (`rlhf.rewards.verifiable:exact_match`: the response's final number against the
answer). `correctness_reward` is the same check for callers that have only the prompt: it
computes the answer with the safe calculator (`rlhf.rollout.envs.calculate`, never `eval`).

Every problem of the task's range sits in exactly one split, decided by a fixed shuffle that
does not depend on the run's seed: training prompts (SFT demonstrations and RL prompts) are
drawn from the "train" problems with the run's seed, held-out evaluation uses the first problems
of the "test" split, the same ones for every seed, so runs are compared on the same questions.
"""

from __future__ import annotations

import math
import random
from functools import lru_cache
from typing import Sequence

from ..data.records import Demonstration
from ..rewards.verifiable import answers_match, extract_answer
from ..rollout.envs import CalculatorError, calculate, format_value, problem_of

MAX_OPERAND = 99  # operands are 0..MAX_OPERAND; subtractions never go below 0
OPERATORS = ("+", "-")
TEST_SHARE = 0.2  # share of all problems held out for evaluation
SPLIT_SEED = 20240601  # the fixed shuffle that assigns problems to splits (not the run's seed)


@lru_cache(maxsize=8)
def _all_problems(max_operand: int, operators: tuple[str, ...]) -> tuple[str, ...]:
    unknown = set(operators) - {"+", "-", "*"}
    if unknown or not operators or max_operand < 1:
        raise ValueError(f"operators must be among + - * and max_operand >= 1, got {operators}, {max_operand}")
    problems = [f"{a}{op}{b}" for op in operators for a in range(max_operand + 1) for b in range(max_operand + 1)
                if op != "-" or a >= b]
    random.Random(SPLIT_SEED).shuffle(problems)
    return tuple(problems)


def problems(split: str, n: int, seed: int = 0, max_operand: int = MAX_OPERAND,
             operators: tuple[str, ...] = OPERATORS) -> list[str]:
    """`n` distinct problems (expressions such as "47+38") of `split`, operands 0..max_operand.

    "train": drawn with `seed`. "test": the first `n` of the held-out split (the same for every
    seed). No problem is in both splits."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    pool = _all_problems(max_operand, tuple(operators))
    cut = int(len(pool) * TEST_SHARE)
    chosen = pool[:cut] if split == "test" else pool[cut:]
    if n > len(chosen):
        raise ValueError(f"asked for {n} {split} problems but the split holds {len(chosen)}")
    return list(chosen[:n]) if split == "test" else random.Random(seed).sample(chosen, n)


def prompt_of(problem: str) -> str:
    """"47+38" -> "47+38=": the text the policy continues."""
    return f"{problem}="


def answer_of(problem: str) -> str:
    """"47+38" -> "85"."""
    return format_value(calculate(problem))


def prompt_rows(problems_: Sequence[str]) -> list[dict]:
    """Prompt rows for `rlhf ppo` with the answer a verifiable reward checks: {"prompt", "answer"}."""
    return [{"prompt": prompt_of(p), "answer": answer_of(p)} for p in problems_]


def demonstrations(n: int, seed: int = 0, max_operand: int = MAX_OPERAND) -> list[Demonstration]:
    """`n` worked training problems: prompt "47+38=", completion "85" (SFT adds the EOS)."""
    return [Demonstration(prompt_of(p), answer_of(p)) for p in problems("train", n, seed, max_operand)]


def is_correct(prompt: str, response: str) -> bool:
    """True when the final answer of `response` (`rlhf.rewards.verifiable.extract_answer`: its last
    number) is the answer to the problem in `prompt`."""
    try:
        answer = answer_of(problem_of(prompt))
    except (CalculatorError, ValueError) as err:
        raise ValueError(f"not an arithmetic prompt: {prompt!r} ({err})") from err
    return answers_match(extract_answer(response), answer)


def correctness_reward(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """The task's verifiable reward, a `module:function` scorer: 1.0 for a correct answer, else 0.0."""
    return [float(is_correct(p, r)) for p, r in zip(prompts, responses)]


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased pass@k of one problem from `n` samples of which `correct` are right (Chen et
    al. 2021): 1 - C(n - c, k) / C(n, k), the chance that k of the n samples drawn without
    replacement hold at least one right answer."""
    if not 0 <= correct <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= correct <= n and 1 <= k <= n, got n={n}, correct={correct}, k={k}")
    if n - correct < k:
        return 1.0
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)
