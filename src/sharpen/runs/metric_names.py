"""sharpen's run-store metric names → the names TRL and verl users know, for the trackers.

The run store keeps sharpen's names (the report reads them); every tracker sink writes the
names below, so a sharpen run sits next to a TRL (`GRPOTrainer`) or verl run in TensorBoard,
MLflow, W&B or trackio. Names not in the table pass through unchanged.

    training (TRL GRPOTrainer)                      held-out evaluation (verl val-core)
    reward/mean            → reward                 eval/accuracy   → val-core/<task>/acc/mean@N
    reward/std             → reward_std             eval/pass@k     → val-core/<task>/acc/best@k/mean
    reward/frac_zero_std   → frac_reward_zero_std   eval/maj@k      → val-core/<task>/acc/maj@k/mean
    reward/frac_unscorable → frac_reward_unscorable eval/<name>/lo, /hi → <mapped>_lo, _hi (95% CI)
    rewards/<signal>/mean  (same)
    kl_ref                 → kl                     eval/<other>    → val-aux/<task>/<other>
    entropy                (same)
    clip_frac              → clip_ratio/region_mean
    clip_frac_low, _high   → clip_ratio/low_mean, clip_ratio/high_mean
    completion_truncated_frac → completions/clipped_ratio (completions cut at the token budget)
    completion_tokens_mean → completions/mean_length
    lr                     → learning_rate

N is the number of held-out samples per problem (`eval.samples`). sharpen's pass@k is the
unbiased estimator of Chen et al. 2021, verl's best@k a bootstrap of the same quantity.
"""

from __future__ import annotations

TRAIN_NAMES = {
    "reward/mean": "reward",
    "reward/std": "reward_std",
    "reward/frac_zero_std": "frac_reward_zero_std",
    "reward/frac_unscorable": "frac_reward_unscorable",  # TRL has none; "reward" is a metric, not a prefix
    "kl_ref": "kl",
    "clip_frac": "clip_ratio/region_mean",
    "clip_frac_low": "clip_ratio/low_mean",
    "clip_frac_high": "clip_ratio/high_mean",
    "completion_truncated_frac": "completions/clipped_ratio",
    "completion_tokens_mean": "completions/mean_length",
    "lr": "learning_rate",
}
"""Training metrics renamed to TRL's (GRPOTrainer logs)."""


EVAL_SUFFIXES = ("lo", "hi", "abs_error")
"""Parts of a held-out metric (its 95% CI bounds, a label-free estimate's error), joined with
'_' rather than '/' so no tracker name is both a metric and a prefix of others (file stores
such as MLflow's keep each name as a path)."""


def _eval_name(base: str, task: str, samples: int) -> str:
    """verl's name of a held-out metric `base` (without the eval/ prefix or a /lo, /hi suffix)."""
    if base == "accuracy":
        return f"val-core/{task}/acc/mean@{samples}"
    for ours, theirs in (("pass@", "best@"), ("maj@", "maj@")):
        k = base[len(ours):]
        if base.startswith(ours) and k.isdigit():
            return f"val-core/{task}/acc/{theirs}{k}/mean"
    return f"val-aux/{task}/{base}"


def tracker_name(name: str, task: str, samples: int) -> str:
    """The tracker-facing name of a run-store metric (see the module table)."""
    if name in TRAIN_NAMES:
        return TRAIN_NAMES[name]
    if not name.startswith("eval/"):
        return name
    base, suffix = name[len("eval/"):], ""
    head, _, last = base.rpartition("/")
    if head and last in EVAL_SUFFIXES:
        base, suffix = head, "_" + last
    return _eval_name(base, task, samples) + suffix
