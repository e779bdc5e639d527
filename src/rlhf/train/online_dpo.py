"""`rlhf dpo --online`: iterative online DPO (Xu et al. 2023; Guo et al. 2024; Xiong et al. 2024).

Each of --rounds rounds:
  1. sample --samples-per-prompt responses to each of --prompts-per-round prompts from the
     CURRENT policy (the next prompts of the shuffled --data, cycling);
  2. label pairs with --labeler: a scorer (reward-model directory or module:function) picks the
     best and the worst of each prompt's responses (ties skipped); `oracle`, the demo's noisy
     scripted annotator, labels disjoint pairs of them, one label each;
  3. score the pairs under the reference (the starting policy, or with --update-reference the
     policy at the start of the round) and train on them with the chosen pairwise loss, exactly
     as offline `rlhf dpo` does (a fresh AdamW, warm-up and cosine schedule each round).

Each round lives in `OUT/rounds/round-R/`: its labelled pairs (`pairs.jsonl`, comparisons any
stage reads), its reference cache, its own metrics and checkpoints, and once finished its figures
(`round.json`). The run itself checkpoints at round boundaries (`OUT/checkpoints/step-N`, N the
training steps of the finished rounds; only the newest is kept): the policy's weights, the
over-optimisation guard and the number of rounds done, through the runtime object like any stage.
--resume loads that checkpoint (the config checked as every resume checks it), checks that the
rounds on disk continue it (`check_rounds`), and continues the unfinished round from its own
checkpoint without sampling or labelling again. `OUT/metrics.jsonl` holds every round's training
lines, the step counted across rounds, plus one line per round with its labelling figures.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import random
import time
from pathlib import Path

from .. import runtime
from ..runtime.files import atomic_write_text, notice
from ..runtime.files import dumps as strict_json
from ..config import DPOConfig
from ..data.batches import check_batch
from ..data.files import write_jsonl
from ..data.formats import read_prompts
from ..data.records import PromptText
from ..data.tokenize import tokenize_pair
from ..models.load import load_policy
from ..rollout.attention import use_fp32_attention
from . import loop
from .direct_alignment import PairData, Reference, attach_reference, make_evaluate, make_loss
from .guard_overopt import OverOptGuard, observe_round, save_best, text_sample, write_round_sample
from .preference_lm import reference_context


# ---------------------------------------------------------------- labelling


class PairLabeler:
    """Turns k responses per prompt into comparison rows {"prompt", "chosen", "rejected"}.

    spec `oracle`: the demo's SentimentOracle (Bradley-Terry noise `oracle_temperature`) labels
    k // 2 disjoint pairs per prompt, as `rlhf generate --label oracle` does; any other spec is a
    scorer (`rlhf.rollout.scorers.load_scorer`) whose best and worst response per prompt form one
    pair (rejection sampling, as in Xiong et al. 2024), skipped when their scores tie.
    """

    def __init__(self, spec: str, oracle_temperature: float, device):
        self.spec, self.oracle_temperature, self.device = spec, oracle_temperature, device
        self.scorer = None
        self.scores: list[float] | None = None  # a scorer's scores of the last call's responses (flat), for the guard
        from ..labelers.pairs import is_named_labeler

        if not is_named_labeler(spec):  # oracle, judge:SPEC: label disjoint pairs; else a scorer
            from ..rollout.scorers import load_scorer

            self.scorer = load_scorer(spec, device)

    def __call__(self, prompts: list[PromptText], responses: list[list[str]], seed: int) -> tuple[list[dict], dict]:
        from ..data.records import prompt_as_json

        if self.scorer is None:
            from ..labelers.pairs import label_pairs

            rows, ties = label_pairs(prompts, responses, self.spec, self.oracle_temperature, seed, self.device)
            return rows, {"labels": len(rows) + ties, "ties_skipped": ties}
        k = len(responses[0])
        flat_prompts = [p for p in prompts for _ in range(k)]
        scores = self.scorer(flat_prompts, [r for group in responses for r in group]).view(len(prompts), k)
        self.scores = scores.flatten().tolist()
        rows = []
        for prompt, group, s in zip(prompts, responses, scores):
            best, worst = int(s.argmax()), int(s.argmin())
            if s[best] > s[worst]:
                rows.append({"prompt": prompt_as_json(prompt), "chosen": group[best], "rejected": group[worst]})
        return rows, {"labels": len(prompts) * k, "sample_score": float(scores.mean()),
                      "ties_skipped": len(prompts) - len(rows)}


def round_finished(round_dir: Path) -> bool:
    """A round's figures are on disk once its round.json holds its training figures."""
    info = round_dir / "round.json"
    return info.exists() and "steps" in json.loads(info.read_text(encoding="utf-8"))


def check_rounds(rounds_dir: Path, finished: int, n_rounds: int) -> None:
    """Refuse to continue a run whose checkpoint says `finished` rounds are done when the rounds on
    disk do not continue it: more rounds done than --rounds, a finished round without its figures,
    or a round after the next one already started. Nothing is touched before the refusal."""
    present = sorted(int(d.name.split("-")[1]) for d in rounds_dir.glob("round-*") if d.is_dir())
    problems = [f"{finished} rounds already finished but --rounds is {n_rounds}"] if finished > n_rounds else []
    problems += [f"round {r} finished but {rounds_dir / f'round-{r}' / 'round.json'} lacks its figures"
                 for r in range(finished) if not round_finished(rounds_dir / f"round-{r}")]
    problems += [f"round {r} started before round {finished} finished" for r in present if r > finished]
    if problems:
        raise ValueError(f"cannot resume the online run in {rounds_dir.parent}: " + "; ".join(problems)
                         + ". Nothing was changed.")


def round_prompts(prompts: list[PromptText], cfg: DPOConfig, r: int) -> list[PromptText]:
    """The prompts of round r: consecutive slices of one seeded shuffle, cycling when exhausted."""
    order = list(range(len(prompts)))
    random.Random(cfg.seed).shuffle(order)
    start = r * cfg.prompts_per_round
    return [prompts[order[(start + i) % len(order)]] for i in range(cfg.prompts_per_round)]


def sample_round(rt: runtime.Runtime, model, tokenizer, prompts: list[PromptText], sampling,
                 round_seed: int, engine=None) -> list[list[str]]:
    """cfg.samples_per_prompt responses to each prompt, as `rollout.generate.sample_responses`
    gives them (or, with `engine`, a `rlhf.rollout.vllm_sampler.PolicyEngine` holding the
    model's weights, as that engine samples them). With several processes prompt j is sampled on
    rank j mod N and the responses are gathered in prompt order on every rank; each row's noise is
    seeded by (round seed, its index in the round), so the responses do not depend on the process
    count."""
    generate = importlib.import_module("rlhf.rollout.generate")  # the module (tests replace its sample_responses)

    k, world, rank = rt.cfg.samples_per_prompt, rt.world_size, rt.rank
    mine = list(range(rank, len(prompts), world))
    seeds = generate.hashed_row_seeds((round_seed,), [j * k + s for j in mine for s in range(k)])
    if engine is not None:  # the engine holds its own synced copy; vllm under fsdp2 is refused
        local = engine.sample_texts(tokenizer, [prompts[j] for j in mine], sampling, k, seeds,
                                    generate.stop_token_ids(tokenizer, model))
    else:
        with rt.gathered(model):  # a sharded policy gathered once for the whole decode
            local = generate.sample_responses(model, tokenizer, [prompts[j] for j in mine], sampling, k=k,
                                              seed=round_seed, batch_size=rt.cfg.sample_batch,
                                              autocast=rt.autocast, row_seeds=seeds)
    shares = rt.dist.gather_objects(local)
    return [shares[j % world][j // world] for j in range(len(prompts))]


def label_on_main(rt: runtime.Runtime, labeler: PairLabeler, prompts: list[PromptText], responses: list[list[str]],
                  seed: int) -> tuple[list[dict], dict, list[float] | None]:
    """(comparison rows, labelling figures, the scorer's scores or None): rank 0 labels (a judge's
    requests are made once) and every rank gets its result, or raises its error. A reward model
    sharded over the ranks labels on every rank, since each of its forwards is a collective: all
    score the same responses alike, and rank 0's result is the one kept."""
    result = None
    everyone = labeler.scorer is not None and any(rt.is_sharded(m) for m in labeler.scorer.models)
    if rt.is_main or everyone:
        try:
            rows, info = labeler(prompts, responses, seed)
            result = (rows, info, labeler.scores)
        except Exception as err:  # noqa: BLE001 - re-raised on every rank, so that none waits forever
            result = err
    result = rt.dist.broadcast_object(result)
    if isinstance(result, Exception):
        raise result
    return result


# ---------------------------------------------------------------- the stage


def run(cfg: DPOConfig) -> Path:
    from ..data.formats import read_comparisons
    from ..rollout.generate import SamplingConfig

    if cfg.model is None or cfg.data is None:
        raise ValueError("dpo --online needs --model DIR (the SFT policy) and --data FILE of prompts")
    overopt = OverOptGuard(cfg.guard_window, cfg.guard_patience, cfg.guard_thresholds, cfg.stop_on_overoptimisation,
                           unit="round")  # over-optimisation guard on each round's samples; settings checked first
    check_batch(cfg.batch_size, cfg.batch_size, runtime.dist.world_size())  # it must divide among the processes
    if cfg.rollout_engine == "vllm":  # imported here only: vllm is a separate install (docs/vllm.md)
        from ..rollout.vllm_sampler import PolicyEngine, import_vllm

        import_vllm()  # not installed: a one-line error with the install line, before the run directory exists
    rt = runtime.init(cfg)
    device = rt.device
    model, tokenizer = load_policy(cfg, device)
    use_fp32_attention(model)  # CPU only: bf16 attention kernels are slower there (rlhf.rollout.attention)
    # the engine loads --model once; before each round's sampling it takes the policy's weights
    engine = PolicyEngine(cfg.model, None, cfg.seed) if cfg.rollout_engine == "vllm" else None
    pad_id = tokenizer.pad_token_id
    prompts = list(dict.fromkeys(p.prompt for p in read_prompts(cfg.data, skip_bad_rows=cfg.skip_bad_rows)))
    labeler = PairLabeler(cfg.labeler, cfg.oracle_temperature, device)
    if labeler.scorer is not None:  # a reward model: sharded for inference like the reference
        rt.prepare_frozen(**labeler.scorer.named_models("reward"))
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    reference = Reference(cfg, model, device, rt.prepare_frozen)
    loss_fn = make_loss(cfg)
    kl_prompts = prompts[: cfg.kl_prompts] if cfg.eval_data is None else \
        list(dict.fromkeys(p.prompt for p in read_prompts(cfg.eval_data)))[: cfg.kl_prompts]
    rounds_dir = rt.path / "rounds"

    def checkpoint(done: list[dict]) -> None:
        """The run at a round boundary: the policy, the guard, the rounds done (the newest kept)."""
        rt.checkpoint(sum(info["steps"] for info in done), keep=1, model=model, overopt_guard=overopt,
                      rounds=len(done))

    # the policy and the guard after the newest finished round, the random state of that moment
    resumed = rt.resume(model=model, overopt_guard=overopt)
    first = resumed.get("rounds", 0) if resumed else 0
    if cfg.resume:
        check_rounds(rounds_dir, first, cfg.rounds)
        then = f"continuing with round {first + 1}" if first < cfg.rounds else "finishing the run"
        notice(f"--resume: {first} of {cfg.rounds} rounds of {rt.path} finished; {then}")
    rounds = [json.loads((rounds_dir / f"round-{r}" / "round.json").read_text()) for r in range(first)]
    if resumed is None:
        checkpoint(rounds)  # step 0: a run killed in its first round resumes with its config checked

    for r in range(first, cfg.rounds):
        if overopt.stop_reason:  # --stop-on-overoptimisation: the guard warned on the last round's samples
            break
        round_dir = rounds_dir / f"round-{r}"
        t_round = time.perf_counter()
        runtime.record_context(f"round {r + 1}/{cfg.rounds}")
        round_rt = rt.part(dataclasses.replace(cfg, out=str(round_dir)))  # resumes (its checkpoint) with the run
        pairs_path, info_path = round_dir / "pairs.jsonl", round_dir / "round.json"
        labelled_before = pairs_path.exists() and info_path.exists()  # round.json is written after the pairs
        if labelled_before:  # resumed mid-round: never sample and label again
            label_info = json.loads(info_path.read_text())
        else:
            these = round_prompts(prompts, cfg, r)
            t0 = time.perf_counter()
            round_seed = cfg.seed * 1000 + r
            if engine is not None:
                engine.sync(model, version=r)  # the policy as this round starts (the sync's time is sampling's)
            responses = sample_round(rt, model, tokenizer, these, sampling, round_seed, engine)
            sample_s = time.perf_counter() - t0
            rows, label_info, scores = label_on_main(rt, labeler, these, responses, round_seed)
            label_info.update(round=r, pairs=len(rows), sample_s=sample_s, label_s=time.perf_counter() - t0 - sample_s,
                              **(engine.stats() if engine is not None else {}))
            if not rows:
                raise ValueError(f"round {r}: the labeler preferred no response over another (all ties)")
            if rt.is_main:
                write_jsonl(pairs_path, rows)
                if overopt.enabled:
                    write_round_sample(round_dir, text_sample([x for group in responses for x in group], scores,
                                                              tokenizer))
                atomic_write_text(info_path, strict_json(label_info))
            rt.dist.barrier()  # every rank reads the pairs rank 0 wrote
        guard_metrics, best = observe_round(overopt, r + 1, round_dir)
        if best and cfg.guard_save_best:  # the policy that sampled this round
            save_best(model, tokenizer, rt.path, save=rt.save_model)
        pairs = read_comparisons(pairs_path)
        data = PairData([tokenize_pair(tokenizer, c.prompt, c.chosen, c.rejected, cfg.max_length) for c in pairs])
        if cfg.update_reference:  # the policy as it starts this round is the reference
            ref_ctx = lambda: reference_context(model, model)  # noqa: E731
        else:
            ref_ctx = lambda: reference.context(before_training=r == 0)  # noqa: E731
        reference_s, _ = attach_reference(data, "train", cfg, ref_ctx, round_rt.run_dir, pad_id, device)
        # the round's pairs may be fewer than a batch: the batch shrinks to them (a share per process)
        batch = min(cfg.batch_size, len(data) // rt.world_size * rt.world_size) or cfg.batch_size
        plan = loop.BatchPlan(len(data), batch, cfg.seed + r,
                              lengths=data.lengths() if cfg.group_by_length else None)
        evaluate = gathered_for(rt, model, make_evaluate(cfg, model, tokenizer, loss_fn, None, kl_prompts, reference,
                                                         device))
        result = loop.fit(round_rt, model, lambda i: data.batch(plan.micro_batch(i), pad_id), plan, loss_fn,
                          evaluate=evaluate, desc=f"online {cfg.loss} round {r + 1}/{cfg.rounds}")
        info = {**label_info, "steps": result.steps, "train_tokens": result.tokens, "train_s": result.wall_s,
                "reference_s": reference_s, "train_loss": result.last_metrics.get("loss"),
                "train_reward_accuracy": result.last_metrics.get("reward_accuracy"),
                # a resumed round's sampling happened before the resume: count it in
                "round_s": time.perf_counter() - t_round + (label_info["sample_s"] if labelled_before else 0.0),
                **guard_metrics}
        if rt.is_main:
            atomic_write_text(info_path, strict_json(info))
        rounds.append(info)
        checkpoint(rounds)  # the round is finished from here on
        rt.dist.barrier()
    if rt.is_main:  # from the rounds' logs, which rank 0 wrote
        write_metrics(rt.run_dir, rounds)

    total = lambda key: sum(info.get(key, 0) for info in rounds)  # noqa: E731
    return rt.finish(model, tokenizer, {
        "stage": "dpo",
        "online": True,
        "loss_type": cfg.loss,
        **cfg.loss_options,
        "labeler": cfg.labeler,
        "rollout_engine": cfg.rollout_engine,
        "rounds": len(rounds),
        "labels": total("labels"),
        "pairs": total("pairs"),
        "steps": total("steps"),
        **gathered_for(rt, model, make_evaluate(cfg, model, tokenizer, loss_fn, None, kl_prompts, reference, device))(),
        "train_tokens": total("train_tokens"),
        "tokens_per_s": total("train_tokens") / max(total("train_s"), 1e-9),
        "train_wall_s": total("train_s"),
        "sample_s": total("sample_s"),
        "per_round": rounds,
        "stopped_early": overopt.stop_reason,
        "guard": overopt.summary(),
    })


def gathered_for(rt: runtime.Runtime, model, evaluate):
    """`evaluate` run with a sharded `model` gathered once (its KL samples are a decode)."""
    def run_gathered() -> dict:
        with rt.gathered(model):
            return evaluate()

    return run_gathered


def write_metrics(run_dir: runtime.RunDir, rounds: list[dict]) -> None:
    """OUT/metrics.jsonl from the rounds' own logs: steps and elapsed time counted across rounds,
    each line tagged with its round, then a line with the round's labelling figures."""
    lines, step, elapsed = [], 0, 0.0
    for info in rounds:
        r = info["round"]
        round_metrics = run_dir.path / "rounds" / f"round-{r}" / "metrics.jsonl"
        last = {}
        for line in round_metrics.read_text(encoding="utf-8").splitlines():
            if line.strip():
                last = {**json.loads(line), "round": r}
                lines.append({**last, "step": step + last["step"], "elapsed_s": elapsed + last["elapsed_s"]})
        step, elapsed = step + info["steps"], elapsed + info["round_s"]
        lines.append({"step": step, "round": r, "loss": info["train_loss"], "lr": last.get("lr", 0.0),
                      "tokens_per_s": info["train_tokens"] / max(info["train_s"], 1e-9), "elapsed_s": elapsed,
                      **{k: info[k] for k in ("labels", "pairs", "sample_s", "label_s", "sample_score", "ties_skipped")
                         if k in info}, **{k: v for k, v in info.items() if k.startswith("guard/")}})
    run_dir.replace_metrics(lines)
