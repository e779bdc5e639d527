"""`rlhf eval policy` keeps the reference's samples in the process: the demo evaluates every
policy against SFT on the same prompts with the same seed, so the reference is sampled once.
The reused samples are exactly those a fresh evaluation draws."""

import json

from rlhf.config import EvalPolicyConfig
from rlhf.eval import policy


def test_the_reference_is_sampled_once_for_several_policies(tiny_model_dir, tmp_path, monkeypatch):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Once upon a time {i}"}) + "\n" for i in range(5)))
    calls = []
    original = policy._sample

    def counting(*args, **kwargs):
        calls.append(args[-1] if isinstance(args[-1], str) else kwargs.get("desc"))
        return original(*args, **kwargs)

    monkeypatch.setattr(policy, "_sample", counting)
    policy._REFERENCE_SAMPLES.clear()

    def evaluate(name, seed=0):
        cfg = EvalPolicyConfig(model=str(tiny_model_dir), reference=str(tiny_model_dir), data=str(prompts),
                               judge="rlhf.demo.oracle:gold_reward", out=str(tmp_path / f"{name}.json"),
                               max_new_tokens=6, max_length=48, precision="fp32", progress=False, seed=seed)
        policy.run(cfg)
        return json.loads((tmp_path / f"{name}.json").read_text())

    first, second = evaluate("a"), evaluate("b")
    assert calls.count("sampling the reference") == 1 and calls.count("sampling the policy") == 2
    policy._REFERENCE_SAMPLES.clear()
    fresh = evaluate("c")
    assert calls.count("sampling the reference") == 2
    assert [s["reference"] for s in second["samples"]] == [s["reference"] for s in fresh["samples"]]
    assert second["reference_score"] == fresh["reference_score"] == first["reference_score"]
    evaluate("d", seed=1)  # another seed draws other samples: not reused
    assert calls.count("sampling the reference") == 3
