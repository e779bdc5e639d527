"""The embedded demo: the story-sentiment task (prompts and demonstrations from the bundled
TinyStories text), its scripted oracle, the plan of sizes, and `rlhf demo` (pipeline).

Nothing below this package imports it; stages reach the oracle only by name
(`rlhf.demo.oracle:gold_reward`, or `--label oracle` through `rlhf.labelers`).
"""
