"""How a learner's model is trained, whatever the learner: micro-batches, gradient
checkpointing, precision, LoRA. Every learner's config section has these keys
(`TrainingConfig`), and the loop applies them to the policy (`prepare_policy`) before the
learner is built, so its optimizer and reference model see the result:

    master weights   fp32 parameters (a model loaded in bf16 on CUDA is cast up), so that
                     AdamW's small updates are not rounded away (Micikevicius et al. 2018,
                     "Mixed Precision Training": fp32 master weights)
    autocast         scoring's decoder passes in bf16 on CUDA (`policy.autocast_dtype`), the
                     head and the log-probs in fp32; fp32 throughout on CPU
    checkpointing    recompute each decoder layer in backward instead of keeping its
                     activations (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost")
    LoRA             a fresh peft adapter; only it trains (`sharpen.models.lora`)
    micro-batches    `policy.micro_batch_tokens`: forward positions per micro-batch
"""

from __future__ import annotations

import importlib.util
from typing import Iterator, Literal, Optional, Union

import torch
from pydantic import Field

from sharpen.config import ConfigModel, Location
from sharpen.models.lora import ALL_LINEAR, add_lora


class LoraConfig(ConfigModel):
    """A LoRA adapter (Hu et al. 2021): W + (α/r)·B·A in each targeted linear layer, W frozen."""

    r: int = Field(16, ge=1, description="Rank r of the update matrices A (r × in) and B (out × r).")
    alpha: float = Field(32.0, gt=0, description="α: the update is scaled by α / r.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input while training.")
    target_modules: Union[Literal["all-linear"], list[str]] = Field(
        ALL_LINEAR, description="Names of the linear layers that get an adapter, e.g. [q_proj, v_proj]; 'all-linear': "
                                "every linear layer but the output head."
    )

    def config_problems(self) -> Iterator[tuple[Location, str]]:
        yield from super().config_problems()
        if isinstance(self.target_modules, list) and not all(isinstance(n, str) and n for n in self.target_modules):
            yield ("target_modules",), f"list the layer names, each a non-empty string (got {self.target_modules})"
        elif self.target_modules == []:
            yield ("target_modules",), "list at least one layer name, e.g. [q_proj, v_proj], or write all-linear"
        if importlib.util.find_spec("peft") is None:
            yield (), "LoRA needs the peft package: pip install 'sharpen[lora]'"


class TrainingConfig(ConfigModel):
    """How the learner's model is trained (keys of every learner's section)."""

    micro_batch_tokens: Optional[int] = Field(
        None, ge=1,
        description="Forward positions (prompt + completion tokens, padding included) scored at once; a larger "
                    "batch is scored in micro-batches whose gradients add up to the same step. Default: as many as "
                    "about 640 MB of activations hold for the model's depth and width (269 on SmolLM2-135M). Lower "
                    "it if memory runs out, raise it for speed.",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute each layer's activations in backward instead of keeping them: less memory, "
                           "about a third more compute (and prompts are scored once per row, not per group)."
    )
    lora: Optional[LoraConfig] = Field(
        None, description="Train a LoRA adapter instead of every weight, e.g. {r: 16, alpha: 32}; the KL reference "
                          "is the adapter switched off, checkpoints hold the adapter (default: full fine-tuning)."
    )


def autocast_dtype(device_type: str, bf16_supported: bool) -> Optional[torch.dtype]:
    """The dtype forward passes run in while training: bf16 on CUDA when the device has it,
    else None (fp32; always on CPU, where bf16 is slower and loses precision for no memory need)."""
    return torch.bfloat16 if device_type == "cuda" and bf16_supported else None


def prepare_policy(policy, cfg: TrainingConfig) -> None:
    """Apply a learner section's training settings to the policy it trains (module doc). A
    setting the model cannot take is a ValueError that names the key."""
    model = policy.model
    if any(p.dtype != torch.float32 for p in model.parameters()):
        model.float()  # fp32 master weights
    device = policy.device
    policy.autocast_dtype = autocast_dtype(device.type, device.type == "cuda" and torch.cuda.is_bf16_supported())
    if cfg.gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        try:
            enable({"use_reentrant": False})  # the name of this argument changed in transformers 5
        except ValueError as error:  # a model class without checkpointing
            raise ValueError(f"learner.gradient_checkpointing: {error}") from None
    if cfg.lora is not None:
        lora = cfg.lora
        try:
            policy.model = add_lora(model, r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                                    target_modules=lora.target_modules)
        except ValueError as error:
            raise ValueError(f"learner.lora.target_modules: {error}") from None
        policy.model.eval()
    if cfg.micro_batch_tokens is not None:
        policy.micro_batch_tokens = cfg.micro_batch_tokens
