"""Preference losses: reward modelling (Bradley-Terry, Rao-Kupper ties, Plackett-Luce) and the
direct-alignment family (DPO, cDPO, IPO, SimPO, ORPO, KTO).

Pairwise losses share one signature, so a trainer calls any entry of ``PAIRWISE_LOSSES`` alike:

    loss_fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
            beta, chosen_lengths=..., rejected_lengths=..., **loss_options)
        -> (losses (B,), chosen_rewards (B,), rejected_rewards (B,))

All log-probs are (B,) SUMS over response tokens (``sequence_logprobs(..., average=False)``);
lengths are (B,) response token counts. Each loss takes the keyword options it documents and
ignores keywords meant for another loss (e.g. dpo ignores the lengths that simpo and orpo need).
Rewards are the detached implicit rewards, beta * (log pi - log pi_ref), or beta * average log pi
for the reference-free SimPO and ORPO. ``kto`` learns from unpaired binary feedback and has its
own signature; ``LOSSES`` lists all six for lookup by name.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def bradley_terry(chosen: Tensor, rejected: Tensor, margin: Optional[Tensor] = None) -> Tensor:
    """Reward-model loss of InstructGPT (Ouyang et al. 2022), after Bradley & Terry 1952.

    chosen, rejected: (B,) scalar rewards of the preferred and the other response; margin: (B,)
    or None, a required gap (Llama 2, Touvron et al. 2023). Returns the scalar mean of
    -log sigmoid(chosen - rejected - margin).
    """
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


def bradley_terry_with_ties(
    chosen: Tensor, rejected: Tensor, is_tie: Tensor, log_theta: float = 1.0
) -> Tensor:
    """Bradley-Terry extended to ties by Rao & Kupper 1967 (as in Liu et al. 2024, "Reward
    Modeling with Ties"). With d = chosen - rejected and log_theta > 0 a tie threshold:

        P(chosen wins) = sigmoid(d - log_theta)
        P(tie)         = (exp(2 log_theta) - 1) sigmoid(d - log_theta) sigmoid(-d - log_theta)

    chosen, rejected: (B,) rewards; is_tie: (B,) bool, True where the labeller saw no difference
    (the order of a tied pair does not matter). Returns the scalar mean negative log-likelihood.
    """
    if log_theta <= 0:
        raise ValueError(f"log_theta must be > 0 for ties to have probability, got {log_theta}")
    diff = chosen - rejected
    log_win = F.logsigmoid(diff - log_theta)
    log_tie = math.log(math.expm1(2 * log_theta)) + log_win + F.logsigmoid(-diff - log_theta)
    return -torch.where(is_tie.bool(), log_tie, log_win).mean()


def plackett_luce(scores: Tensor, ranking: Tensor) -> Tensor:
    """Listwise reward-model loss: the Plackett-Luce likelihood (Plackett 1975; Luce 1959), the
    ranking loss of InstructGPT's K-way comparisons and of DPO's appendix A.3.

    scores: (B, K) reward of each of K responses; ranking: (B, K) int64 response indices, best
    first. Returns the scalar mean over B of
        -sum_i [s_{rank_i} - logsumexp(s_{rank_i}, ..., s_{rank_K})].
    K = 2 equals ``bradley_terry``. Rankings must be strict: for tied responses, compare pairs
    with ``bradley_terry_with_ties`` instead.
    """
    ordered = scores.gather(1, ranking)
    # logsumexp over each suffix ordered[:, i:], from a cumulative logsumexp run backwards.
    suffix_logsumexp = torch.logcumsumexp(ordered.flip(-1), dim=-1).flip(-1)
    return -(ordered - suffix_logsumexp).sum(-1).mean()


def _log_ratio_difference(
    policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor, ref_rejected_logps: Tensor,
) -> Tensor:
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def _implicit_rewards(
    policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, beta: float,
) -> tuple[Tensor, Tensor]:
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)
    return chosen.detach(), rejected.detach()


def dpo(
    policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, beta: float, **_,
) -> tuple[Tensor, Tensor, Tensor]:
    """Direct Preference Optimisation (Rafailov et al. 2023, eq. 7): losses = -log sigmoid(beta h),
    h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)).

    Inputs (B,) summed log-probs; returns (losses, chosen_rewards, rejected_rewards), each (B,).
    """
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    h = _log_ratio_difference(*logps)
    losses = -F.logsigmoid(beta * h)
    return (losses, *_implicit_rewards(*logps, beta))


def cdpo(
    policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, beta: float,
    label_smoothing: float = 0.1, **_,
) -> tuple[Tensor, Tensor, Tensor]:
    """Conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"): each label is
    taken as flipped with probability ``label_smoothing`` (epsilon).

    losses = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h), h as in ``dpo``;
    eps = 0 is DPO. Inputs (B,); returns (losses, chosen_rewards, rejected_rewards), each (B,).
    """
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    h = _log_ratio_difference(*logps)
    eps = label_smoothing
    losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    return (losses, *_implicit_rewards(*logps, beta))


def ipo(
    policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, beta: float, **_,
) -> tuple[Tensor, Tensor, Tensor]:
    """Identity Preference Optimisation (Azar et al. 2023, eq. 17): losses = (h - 1 / (2 beta))**2,
    h the log-ratio difference of ``dpo``; beta is the paper's tau.

    The loss uses whatever log-probs the caller passes: sums (the paper's definition) or
    per-token averages (as TRL does, which keeps h on a length-independent scale; then pass
    ``sequence_logprobs(..., average=True)`` for all four inputs).
    Inputs (B,); returns (losses, chosen_rewards, rejected_rewards), each (B,).
    """
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    h = _log_ratio_difference(*logps)
    losses = (h - 1 / (2 * beta)) ** 2
    return (losses, *_implicit_rewards(*logps, beta))


def simpo(
    policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, beta: float,
    *, chosen_lengths: Tensor, rejected_lengths: Tensor, gamma: float = 0.5, **_,
) -> tuple[Tensor, Tensor, Tensor]:
    """SimPO (Meng et al. 2024, eq. 6), reference-free and length-normalised:

        losses = -log sigmoid(beta * (log pi(y_w) / |y_w| - log pi(y_l) / |y_l|) - gamma)

    policy_*: (B,) SUMMED log-probs, divided here by chosen_lengths / rejected_lengths, (B,)
    token counts; ref_* are ignored (kept for the common signature). gamma: target margin.
    Returns (losses, beta * avg log pi(y_w), beta * avg log pi(y_l)), each (B,).
    """
    avg_chosen = policy_chosen_logps / chosen_lengths
    avg_rejected = policy_rejected_logps / rejected_lengths
    losses = -F.logsigmoid(beta * (avg_chosen - avg_rejected) - gamma)
    return losses, (beta * avg_chosen).detach(), (beta * avg_rejected).detach()


def log_odds(avg_logp: Tensor) -> Tensor:
    """log(p / (1 - p)) from log p < 0, shape preserved; log(1 - p) computed without cancellation
    (log1mexp, Maechler 2012): log(-expm1(x)) near 0, log1p(-exp(x)) further out."""
    near_zero = avg_logp > -math.log(2)
    log_one_minus_p = torch.where(
        near_zero, torch.log(-torch.expm1(avg_logp)), torch.log1p(-torch.exp(avg_logp))
    )
    return avg_logp - log_one_minus_p


def orpo(
    policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, beta: float,
    *, chosen_lengths: Tensor, rejected_lengths: Tensor, **_,
) -> tuple[Tensor, Tensor, Tensor]:
    """The odds-ratio term of ORPO (Hong et al. 2024, eq. 7), weighted by beta (the paper's lambda):

        losses = -beta * log sigmoid(log_odds(avg log pi(y_w)) - log_odds(avg log pi(y_l)))

    policy_*: (B,) SUMMED log-probs, averaged here with chosen_lengths / rejected_lengths (B,);
    ref_* are ignored. The full ORPO loss is the SFT NLL on the chosen response plus these
    losses: the trainer adds ``masked_cross_entropy`` of y_w itself.
    Returns (losses, beta * avg log pi(y_w), beta * avg log pi(y_l)), each (B,).
    """
    avg_chosen = policy_chosen_logps / chosen_lengths
    avg_rejected = policy_rejected_logps / rejected_lengths
    losses = -beta * F.logsigmoid(log_odds(avg_chosen) - log_odds(avg_rejected))
    return losses, (beta * avg_chosen).detach(), (beta * avg_rejected).detach()


def kto_reference_point(policy_logps_mismatched: Tensor, ref_logps_mismatched: Tensor) -> Tensor:
    """KTO's reference point z0 (Ethayarajh et al. 2024, sec. 4.1): the batch estimate of
    KL(pi || pi_ref), the mean of log pi - log pi_ref on mismatched (x_i, y_j) pairs, clamped at
    0 and detached. Inputs (B,) summed log-probs; returns a scalar. Under data parallelism the
    caller averages it across ranks."""
    return (policy_logps_mismatched - ref_logps_mismatched).mean().clamp(min=0).detach()


def kto(
    policy_logps: Tensor, ref_logps: Tensor, labels: Tensor, kl_ref_point: Tensor, beta: float,
    desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Kahneman-Tversky Optimisation (Ethayarajh et al. 2024, eq. 8) for unpaired thumbs up/down.

    policy_logps, ref_logps: (B,) summed log-probs of each completion; labels: (B,) bool, True
    for desirable; kl_ref_point: scalar z0 from ``kto_reference_point``.
    With r = log pi - log pi_ref:
        desirable:   desirable_weight   * (1 - sigmoid(beta * (r - z0)))
        undesirable: undesirable_weight * (1 - sigmoid(beta * (z0 - r)))
    Returns (losses (B,), rewards (B,) = beta * r detached).
    """
    log_ratio = policy_logps - ref_logps
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (log_ratio - kl_ref_point)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (kl_ref_point - log_ratio)))
    losses = torch.where(labels.bool(), desirable, undesirable)
    return losses, (beta * log_ratio).detach()


PAIRWISE_LOSSES = {"dpo": dpo, "cdpo": cdpo, "ipo": ipo, "simpo": simpo, "orpo": orpo}
# kto takes (policy_logps, ref_logps, labels, kl_ref_point, beta, ...), not pairs.
LOSSES = {**PAIRWISE_LOSSES, "kto": kto}
