"""LoRA adapters through `peft` (extra `sharpen[lora]`), and the weights a checkpoint holds.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): each targeted
linear layer W gets a trainable update (α/r)·B·A of rank r while W stays frozen, so a
learner's gradients and AdamW state cover the adapter only, and the initial model is the
same model with its adapter switched off (`disable_adapter`), no copy.

A checkpoint folder holds a full model's weights (config.json and safetensors, as
`save_pretrained` writes them) or, for a LoRA policy, its adapter (adapter_config.json and
adapter_model.safetensors); `load_weights` reads either back into the live model, and
`merged_model` folds an adapter into its base for export.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence, Union

ALL_LINEAR = "all-linear"
"""target_modules meaning every linear layer but the output head (peft's own shorthand)."""


class LoraUnavailable(RuntimeError):
    """LoRA was asked for but `peft` is not installed."""


def _peft():
    try:
        import peft
    except ImportError:
        raise LoraUnavailable("learner.lora needs the peft package: pip install 'sharpen[lora]'") from None
    return peft


def is_lora(model) -> bool:
    """Whether `model` is a peft model whose trainable weights are its adapter."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def add_lora(model, *, r: int, alpha: float, dropout: float, target_modules: Union[str, Sequence[str]]):
    """`model` wrapped by peft with a fresh LoRA adapter ("default"): only the adapter trains.

    A target that names no module of the model is a ValueError that lists its linear layers."""
    peft = _peft()
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                             task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            return peft.get_peft_model(model, config)
    except ValueError as error:
        import torch

        names = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(f"LoRA target_modules {targets!r}: {str(error).splitlines()[0]}; the model's linear layers "
                         f"are named {', '.join(names)} (or use {ALL_LINEAR!r})") from None


def weights_file(model) -> str:
    """The file that marks a checkpoint folder holding `model`'s trained weights: the adapter's
    config for a LoRA policy, else the model's config."""
    return "adapter_config.json" if is_lora(model) else "config.json"


def load_weights(model, folder: Path) -> None:
    """Load a checkpoint folder's weights into the live `model`: its adapter for a LoRA
    policy, all its weights otherwise (in the model's dtype)."""
    folder = Path(folder)
    if is_lora(model):
        peft = _peft()
        if not (folder / "adapter_config.json").is_file():
            raise ValueError(f"{folder} holds no LoRA adapter (no adapter_config.json), but the policy trains one")
        result = peft.set_peft_model_state_dict(model, peft.utils.load_peft_weights(str(folder), device="cpu"))
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{folder}: adapter weights {result.unexpected_keys[:3]} fit no layer of the model")
        return
    from transformers import AutoModelForCausalLM

    weights = AutoModelForCausalLM.from_pretrained(folder, dtype=next(model.parameters()).dtype).state_dict()
    model.load_state_dict(weights)


def merged_model(base, adapter_folder: Path):
    """`base` (a plain model) with the adapter saved in `adapter_folder` merged into its
    weights: a plain transformers model again, W + (α/r)·B·A in every targeted layer."""
    peft = _peft()
    return peft.PeftModel.from_pretrained(base, str(adapter_folder)).merge_and_unload()
