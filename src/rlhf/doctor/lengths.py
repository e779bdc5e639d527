"""Token lengths of a stage's data, measured with the stage's own tokenisation: how many tokens
each unit (example, preference, pair, prompt) puts through the model after the stage cuts it to
`max_length`, and how many units lose part of their prompt or of their response to that cut.

Cutting follows `rlhf.data.tokenize.truncate` (the prompt loses its start, the response its end)
applied to token counts, so no figure here can disagree with what training sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.formats import DataError, read_demonstrations, read_preferences, read_prompts
from ..data.records import Comparison
from ..data.tokenize import (UNCHECKED_LENGTH, conversation_text, encode_completion, encode_prompt, reward_context,
                             truncate)

# Tokenising a whole large data set twice would make the doctor slow; shares are measured on the
# first PROFILE_LIMIT units (the unit count itself always covers the whole file).
PROFILE_LIMIT = 5000
TEXT_SAMPLE = 100


@dataclass
class Lengths:
    units: int  # examples (sft), preferences (rm), pairs (dpo) or prompts (ppo, online dpo) in the file
    unit: str  # what a unit is, for the table ("examples", "prompts", ...)
    tokens: list[int] = field(default_factory=list)  # (n,) tokens each profiled unit sends through the model, after cutting
    prompts_cut: int = 0  # profiled units whose prompt lost tokens to max_length
    responses_cut: int = 0  # profiled units whose completion/response lost its end (and its EOS)
    longest_prompt: int = 0  # tokens of the longest prompt, before cutting
    references: list[int] = field(default_factory=list)  # ppo, online dpo: reference response tokens with EOS, if the data has any
    prompts: list = field(default_factory=list)  # the first TEXT_SAMPLE prompts, for the tokenizer round trip
    responses: list[str] = field(default_factory=list)  # the first TEXT_SAMPLE responses (completions, chosen)

    def keep_text(self, prompt, response: str | None = None) -> None:
        if len(self.prompts) < TEXT_SAMPLE:
            self.prompts.append(prompt)
            if response is not None:
                self.responses.append(response)

    @property
    def profiled(self) -> int:
        return len(self.tokens)

    @property
    def mean_tokens(self) -> float:
        return sum(self.tokens) / max(1, len(self.tokens))


def _cut(prompt_len: int, response_len: int, budget: int) -> tuple[int, int]:
    """Tokens of prompt and response kept when the stage fits them into `budget` tokens."""
    kept_prompt, kept_response = truncate(range(prompt_len), range(response_len), budget)
    return len(kept_prompt), len(kept_response)


def sft_lengths(cfg, tokenizer) -> Lengths:
    """Demonstrations: prompt + completion + EOS per example (with --packing, see `packed_rows`)."""
    demos = read_demonstrations(cfg.data, skip_bad_rows=cfg.skip_bad_rows)
    out = Lengths(len(demos), "examples")
    for d in demos[:PROFILE_LIMIT]:
        p, c = len(encode_prompt(tokenizer, d.prompt)), len(encode_completion(tokenizer, d.prompt, d.completion))
        kept_p, kept_c = _cut(p, c, cfg.max_length)
        out.tokens.append(kept_p + kept_c)
        out.prompts_cut += kept_p < p
        out.responses_cut += kept_c < c
        out.longest_prompt = max(out.longest_prompt, p)
        out.keep_text(d.prompt, d.completion)
    return out


def packed_rows(tokens: list[int], max_length: int) -> int:
    """Rows that greedy packing (`rlhf.data.collate.pack_completions`) fills with examples of these lengths."""
    rows, used = 0, 0
    for t in tokens:
        if used and used + t > max_length:
            rows, used = rows + 1, 0
        used += t
    return rows + (1 if used else 0)


def rm_lengths(cfg, tokenizer, input_format: str) -> Lengths:
    """Preferences: every response of a pair or ranking is one sequence, prompt + response."""
    records = read_preferences(cfg.data, skip_bad_rows=cfg.skip_bad_rows)
    out = Lengths(len(records), "preferences")
    for record in records[:PROFILE_LIMIT]:
        responses = (record.chosen, record.rejected) if isinstance(record, Comparison) else record.responses
        context = reward_context(record.prompt, cfg.context_turns)
        total, prompt_cut, response_cut = 0, False, False
        for response in responses:
            if input_format == "causal":
                p, r = len(encode_prompt(tokenizer, context)), len(encode_completion(tokenizer, context, response))
                budget = cfg.max_length
            else:  # encoder: [CLS] prompt [SEP] response [SEP], the prompt rendered as text
                text = conversation_text(context)
                p = len(tokenizer(text, add_special_tokens=False, **UNCHECKED_LENGTH)["input_ids"]) if text else 0
                r = len(tokenizer(response, add_special_tokens=False, **UNCHECKED_LENGTH)["input_ids"])
                budget = cfg.max_length - tokenizer.num_special_tokens_to_add(pair=bool(text))
            kept_p, kept_r = _cut(p, r, budget)
            total += kept_p + kept_r + (cfg.max_length - budget)
            prompt_cut, response_cut = prompt_cut or kept_p < p, response_cut or kept_r < r
            out.longest_prompt = max(out.longest_prompt, p)
        out.tokens.append(total)
        out.keep_text(record.prompt, responses[0])
        out.prompts_cut += prompt_cut
        out.responses_cut += response_cut
    return out


def dpo_lengths(cfg, tokenizer) -> Lengths:
    """Comparisons (both sides share the prompt, cut for the longer response, as `tokenize_pair`
    does), or for kto thumbs up/down, each scored with a mismatched partner (twice the tokens)."""
    if cfg.loss == "kto":
        from ..data.formats import read_feedback

        feedback = read_feedback(cfg.data, skip_bad_rows=cfg.skip_bad_rows)
        out = Lengths(len(feedback), "completions")
        for f in feedback[:PROFILE_LIMIT]:
            p, c = len(encode_prompt(tokenizer, f.prompt)), len(encode_completion(tokenizer, f.prompt, f.completion))
            kept_p, kept_c = _cut(p, c, cfg.max_length)
            out.tokens.append(2 * (kept_p + kept_c))
            out.keep_text(f.prompt, f.completion)
            out.prompts_cut += kept_p < p
            out.responses_cut += kept_c < c
            out.longest_prompt = max(out.longest_prompt, p)
        return out
    from ..data.formats import read_comparisons

    pairs = read_comparisons(cfg.data, skip_bad_rows=cfg.skip_bad_rows)
    out = Lengths(len(pairs), "pairs")
    for pair in pairs[:PROFILE_LIMIT]:
        p = len(encode_prompt(tokenizer, pair.prompt))
        chosen = len(encode_completion(tokenizer, pair.prompt, pair.chosen))
        rejected = len(encode_completion(tokenizer, pair.prompt, pair.rejected))
        kept_p, _ = _cut(p, max(chosen, rejected), cfg.max_length)
        budget = cfg.max_length - kept_p
        out.tokens.append(2 * kept_p + min(chosen, budget) + min(rejected, budget))
        out.keep_text(pair.prompt, pair.chosen)
        out.prompts_cut += kept_p < p
        out.responses_cut += max(chosen, rejected) > budget
        out.longest_prompt = max(out.longest_prompt, p)
    return out


def prompt_lengths(cfg, tokenizer) -> Lengths:
    """Prompts that a policy continues (ppo, online dpo): each keeps its last
    `max_length - max_new_tokens` tokens. Reference responses (demonstrations or HH chosen
    replies in the same file) are measured when the rows carry them."""
    prompts = read_prompts(cfg.data, skip_bad_rows=cfg.skip_bad_rows)
    out = Lengths(len(prompts), "prompts")
    budget = cfg.max_length - cfg.max_new_tokens
    for record in prompts[:PROFILE_LIMIT]:
        p = len(encode_prompt(tokenizer, record.prompt))
        out.tokens.append(min(p, budget))
        out.keep_text(record.prompt)
        out.prompts_cut += p > budget
        out.longest_prompt = max(out.longest_prompt, p)
    try:
        demos = read_demonstrations(cfg.data)
    except DataError:  # prompt-only rows: no reference responses
        demos = []
    out.references = [len(encode_completion(tokenizer, d.prompt, d.completion)) for d in demos[:PROFILE_LIMIT]]
    out.responses = [d.completion for d in demos[:TEXT_SAMPLE]]
    return out
