"""Policies: what generates completions (and, when trainable, scores them).

The transformers backend is imported on first use, so the records stay cheap to import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from sharpen.models.base import Completion, Policy, SamplingParams, TokenScores

if TYPE_CHECKING:
    from sharpen.models.hf import HFPolicy

# HTTP backend for OpenAI-compatible servers: sharpen.models.openai_http.OpenAIPolicy


def resolve_model(spec: str, progress: bool = True) -> Path | str:
    """"default" → the embedded model's cache directory (built if missing); else `spec`."""
    if spec == "default":
        from sharpen.models.embedded import ensure_default_model

        return ensure_default_model(progress=progress)
    return spec


def load_policy(spec: str = "default", *, device: Optional[str] = None, seed: int = 0,
                progress: bool = True) -> "HFPolicy":
    """A policy from "default" (the embedded model) or a local HF checkpoint path."""
    from sharpen.models.hf import HFPolicy

    return HFPolicy.load(resolve_model(spec, progress=progress), device=device, seed=seed)


__all__ = ["Completion", "Policy", "SamplingParams", "TokenScores", "load_policy", "resolve_model"]
