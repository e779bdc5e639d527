"""The embedded demo: the story-sentiment task (prompts and demonstrations from the bundled
TinyStories text), its scripted oracle, the plan of sizes, and `rlhf demo` (pipeline).

Nothing below this package imports it; stages reach the oracle by name: as a scorer
(`rlhf.demo.oracle:gold_reward`, a string the user passes) or as the labeler `oracle`
(`--label oracle`), which importing this package registers in `rlhf.labelers.registry`
(`rlhf.cli` imports it before every command).
"""

from ..labelers.registry import register_labeler
from .oracle import SentimentOracle

register_labeler("oracle", SentimentOracle)
