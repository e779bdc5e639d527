"""`rlhf iterate`: the next round of the loop, from the feedback a deployed policy collected.

    current round (--from) ──▶ labels since the last round (store, per-project watermark)
        ──▶ rm+ppo: reward model warm-started on them, then PPO/RLOO/GRPO from the current policy
            dpo:    DPO from the current policy on them
        ──▶ the new policy against the current one (win rate) ──▶ lineage (lineage.json + store)
        ──▶ `rlhf serve --model OUT/policy` collects the next round's feedback

    parent   which policy, reward model and held-out prompts the current round has
    collect  the store's new labels -> comparisons, with the label ids each came from
    round    the stages, the evaluation and the lineage: `run(cfg)`

The package imports both the torch-free feedback store and the training stages; neither of
those imports it.
"""
