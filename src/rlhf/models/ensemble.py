"""Reward-model ensembles: K reward models saved as one directory and scored together.

An ensemble directory (`rlhf rm --ensemble K` writes one as its `model/`) holds

    ensemble.json          {"kind": "ensemble", "members": ["members/0", ...]}
    members/0 .. K-1/      each an ordinary reward-model directory, loadable by transformers alone
    config.json, tokenizer files   member 0's, so tools that read a model's config or tokenizer
                           (input format, vocabulary checks) read the ensemble's

and `rlhf.models.load_reward_model` returns an `EnsembleRewardModel` for it. Members trained from
different seeds put their rewards at different offsets and scales (Bradley-Terry fixes neither),
so each member's score is first standardised with its own training-set statistics,
z_k = (r_k - mean_k) / std_k; the ensemble's reward is the mean of the z_k and its uncertainty
their standard deviation over members (Coste et al. 2023 normalise members the same way). The
ensemble's own mean and std are therefore 0 and 1: `normalize=True` changes nothing.

    rm = load_reward_model("runs/rm-ens/model")
    rm.score(prompts, responses)                 # (B,) mean of the members' standardised scores
    mean, std = rm.score_mean_std(prompts, responses)
    rm.score_members(prompts, responses)         # (K, B)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import torch

from .load import COMPLETE_MARKER, TMP_INFIX, publish_model_dir

ENSEMBLE_FILE = "ensemble.json"
MEMBERS_DIR = "members"


def is_ensemble_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / ENSEMBLE_FILE).is_file()


def member_dirs(path: str | os.PathLike) -> list[Path]:
    """The member directories an ensemble directory lists, checked to exist."""
    path = Path(path)
    try:
        spec = json.loads((path / ENSEMBLE_FILE).read_text(encoding="utf-8"))
        members = [path / m for m in spec["members"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path / ENSEMBLE_FILE} is not a valid ensemble description ({type(err).__name__}: {err})") from err
    if len(members) < 1:
        raise ValueError(f"{path / ENSEMBLE_FILE} lists no members")
    missing = [str(m) for m in members if not (m / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(f"ensemble {path}: member directories missing or incomplete: {', '.join(missing)}")
    return members


def save_ensemble(members: Sequence[str | os.PathLike], out_dir: str | os.PathLike, info: dict | None = None) -> Path:
    """Copy the reward-model directories `members` into one ensemble directory `out_dir`.

    Written like `save_pretrained`: into a temporary sibling, fsynced, marked complete and renamed
    into place, so `out_dir` is never half an ensemble. `info` is stored in ensemble.json.
    """
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}{TMP_INFIX}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    names = []
    for i, member in enumerate(members):
        names.append(f"{MEMBERS_DIR}/{i}")
        shutil.copytree(member, tmp / names[-1])
    for file in Path(members[0]).iterdir():  # member 0's config and tokenizer, not its weights
        if file.is_file() and not file.name.endswith(".safetensors") and file.name != COMPLETE_MARKER:
            shutil.copy2(file, tmp / file.name)
    spec = {"kind": "ensemble", "members": names, **(info or {})}
    (tmp / ENSEMBLE_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return publish_model_dir(tmp, out)


def average_state_dicts(state_dicts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of K state dicts with the same keys and shapes (WARM's weight average).

    Floating tensors are averaged in float64 and returned in their own dtype; integer buffers
    (e.g. position ids) must agree across members and are kept as they are.
    """
    if not state_dicts:
        raise ValueError("nothing to average")
    keys = list(state_dicts[0])
    for i, sd in enumerate(state_dicts[1:], 1):
        if list(sd) != keys:
            raise ValueError(f"member {i} has other parameters than member 0: the members must share one architecture")
    averaged = {}
    for key in keys:
        tensors = [sd[key] for sd in state_dicts]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise ValueError(f"{key}: shapes differ between members ({[tuple(t.shape) for t in tensors]})")
        if tensors[0].is_floating_point():
            averaged[key] = torch.stack([t.double() for t in tensors]).mean(0).to(tensors[0].dtype)
        else:
            if any(not torch.equal(t, tensors[0]) for t in tensors):
                raise ValueError(f"{key}: integer buffer differs between members and cannot be averaged")
            averaged[key] = tensors[0].clone()
    return averaged


class EnsembleRewardModel:
    """K reward models (`rlhf.models.reward.RewardModel`) scored as one; see the module docstring.

    The members must read inputs alike (same tokenizer vocabulary, input format, length and
    context), so one tokenisation serves all: `tokenize` and `score_examples` work as a single
    model's do, and every caller of a single reward model keeps working.
    """

    def __init__(self, members: Sequence, path: Path | None = None):
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        first = members[0]
        for i, m in enumerate(members[1:], 1):
            same = (m.input_format, m.max_length, m.context_turns) == (first.input_format, first.max_length,
                                                                          first.context_turns)
            if not same or m.tokenizer.get_vocab() != first.tokenizer.get_vocab():
                raise ValueError(f"ensemble {path}: member {i} reads its inputs differently from member 0 "
                                 "(tokenizer, input format, max length or context turns)")
        self.members, self.path = list(members), path
        self.tokenizer, self.input_format = first.tokenizer, first.input_format
        self.max_length, self.context_turns = first.max_length, first.context_turns
        self.mean, self.std = 0.0, 1.0  # the members' scores are standardised before they are combined
        self.model = first.model

    def __len__(self) -> int:
        return len(self.members)

    def tokenize(self, prompt, response):
        return self.members[0].tokenize(prompt, response)

    def member_scores_examples(self, examples: Sequence, batch_size: int = 32) -> torch.Tensor:
        """(K, N) standardised scores z_k = (r_k - mean_k) / std_k of tokenised examples."""
        rows = []
        for m in self.members:
            std = m.std if m.std > 0 else 1.0
            rows.append((m.score_examples(examples, batch_size) - m.mean) / std)
        return torch.stack(rows)

    def score_examples(self, examples: Sequence, batch_size: int = 32) -> torch.Tensor:
        """(N,) ensemble rewards (mean over members of the standardised scores)."""
        return self.member_scores_examples(examples, batch_size).mean(0)

    def score_members(self, prompts: Sequence, responses: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """(K, B) standardised scores of each member for responses[i] to prompts[i]."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.member_scores_examples([self.tokenize(p, r) for p, r in zip(prompts, responses)], batch_size)

    def score_mean_std(self, prompts: Sequence, responses: Sequence[str], batch_size: int = 32):
        """((B,) mean, (B,) standard deviation over members, dividing by K) of the standardised scores."""
        scores = self.score_members(prompts, responses, batch_size)
        return scores.mean(0), scores.std(0, correction=0)

    def score(self, prompts: Sequence, responses: Sequence[str], normalize: bool = False,
              batch_size: int = 32) -> torch.Tensor:
        """(B,) ensemble rewards; `normalize` is accepted for a single model's signature and changes nothing."""
        return self.score_members(prompts, responses, batch_size).mean(0)
