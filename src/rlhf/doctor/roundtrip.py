"""Tokenise, detokenise, compare: a tokenizer that does not give back its input makes the reward
model score other text than the policy wrote, and a chat template whose reply does not end on a
stop token makes generation run to max_new_tokens every time.

With a chat template: a conversation (the data's first, else a made-up one) is rendered to text,
tokenised, decoded and compared with the rendering; its ids must equal the template's own ids;
the prompt must render as a prefix of prompt + reply; the reply must end on a stop token.
Without one: texts of the data (prompts and responses) must decode to themselves, the way
`rlhf.rollout.generate.decode_responses` decodes (special tokens dropped).
"""

from __future__ import annotations

from ..data.records import Message, is_conversation
from ..data.tokenize import encode_completion
from ..rollout.generate import stop_token_ids
from .checks import FAIL, INFO, PASS, Check

SAMPLE_CONVERSATION = ({"role": "user", "content": "Write one sentence about a cat."},
                       {"role": "assistant", "content": "The cat slept in the sun, purring."})
MAX_TEXTS = 200  # plain-text round trip: the first texts of the data


def _ids(out) -> list[int]:
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def chat_round_trip(tokenizer, conversation: list[dict]) -> Check:
    name = "chat template round trip"
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    template_ids = _ids(tokenizer.apply_chat_template(conversation, tokenize=True))
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoded = tokenizer.decode(template_ids)
    problems = []
    if decoded != text:
        problems.append(f"decode(tokens) differs from the rendering: {decoded[:80]!r} vs {text[:80]!r}")
    if text_ids != template_ids:
        problems.append(f"tokenising the rendered text gives other ids than the template ({len(text_ids)} vs "
                        f"{len(template_ids)} tokens)")
    prompt = tuple(Message(m["role"], m["content"]) for m in conversation[:-1])
    try:
        reply = encode_completion(tokenizer, prompt, conversation[-1]["content"])
        # A template may close the turn with a newline after its end-of-turn token: look at the last few.
        if reply and not set(stop_token_ids(tokenizer)).intersection(reply[-3:]):
            problems.append(f"the reply ends on {tokenizer.decode(reply[-3:])!r}, not on a stop token: "
                            "generation will not stop at the end of a turn")
    except ValueError as err:
        problems.append(str(err))
    if problems:
        return Check(name, FAIL, "; ".join(problems))
    return Check(name, PASS, f"{len(template_ids)} tokens of a {len(conversation)}-turn conversation render, "
                             "tokenise and decode back identically; the reply ends on a stop token")


def text_round_trip(tokenizer, texts: list[str]) -> Check:
    name = "text round trip"
    texts = [t for t in texts if t][:MAX_TEXTS]
    bad = []
    for t in texts:
        back = tokenizer.decode(tokenizer(t, add_special_tokens=False)["input_ids"], skip_special_tokens=True)
        if back != t:
            bad.append((t, back))
    if tokenizer.eos_token_id is None:
        return Check(name, FAIL, "the tokenizer has no EOS token: completions cannot be taught to end")
    if bad:
        t, back = bad[0]
        return Check(name, FAIL, f"{len(bad)}/{len(texts)} texts do not decode to themselves, e.g. {t[:60]!r} -> "
                                 f"{back[:60]!r} (the reward would score other text than the policy wrote)")
    return Check(name, PASS, f"{len(texts)} texts of the data tokenise and decode back identically (no chat "
                             "template: plain-text prompts)")


def round_trip(tokenizer, prompts: list, responses: list[str], encoder: bool = False) -> Check:
    """The chat-template round trip when the tokenizer has a template, else the plain-text one.
    An encoder reward model (`encoder`) reads text and never writes any: nothing to round-trip."""
    if encoder:
        return Check("tokenizer round trip", INFO, "encoder reward model: it reads prompt and response text with its "
                                                   "own tokenizer and never decodes (no EOS needed)")
    if getattr(tokenizer, "chat_template", None):
        conversation = next(([{"role": m.role, "content": m.content} for m in p] for p in prompts
                             if is_conversation(p) and p[-1].role != "assistant"), None)
        if conversation is None:
            conversation = list(SAMPLE_CONVERSATION)
        else:
            conversation.append({"role": "assistant", "content": responses[0] if responses else "Yes."})
        return chat_round_trip(tokenizer, conversation)
    texts = [p for p in prompts if isinstance(p, str)] + list(responses)
    return text_round_trip(tokenizer, texts)
