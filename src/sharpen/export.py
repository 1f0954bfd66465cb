"""`sharpen export RUN_DIR OUT_DIR`: a run's last checkpoint as a plain Hugging Face model.

A full fine-tuning checkpoint is already one; a LoRA checkpoint holds the adapter only, so
the run's base model (its config's `model`) is loaded and the adapter merged into it
(`sharpen.models.lora.merged_model`). OUT_DIR gets the weights (safetensors), config,
generation config and the tokenizer, loadable by `AutoModelForCausalLM.from_pretrained`
and `AutoTokenizer.from_pretrained`.
"""

from __future__ import annotations

from pathlib import Path

from sharpen.runs.store import FILENAME, RunStore


class ExportError(ValueError):
    """A run directory cannot be exported (no run, no checkpoint) or the output is taken."""


def last_checkpoint(run_dir: Path) -> tuple[Path, str]:
    """The folder of a run's newest indexed checkpoint, and the run's model spec."""
    if not (run_dir / FILENAME).is_file():
        raise ExportError(f"{run_dir} is not a run directory (it holds no {FILENAME}); pass the directory "
                          "`sharpen run` wrote")
    with RunStore(run_dir) as store:
        checkpoints, config = store.checkpoints(), store.config() or {}
    if not checkpoints:
        raise ExportError(f"{run_dir} holds no checkpoint yet (one is written every checkpoint_every steps)")
    folder = Path(max(checkpoints, key=lambda c: c.step).path)
    if not folder.is_dir():
        raise ExportError(f"{run_dir}: its last checkpoint {folder} is missing")
    return folder, config.get("model", "default")


def export_run(run_dir: str | Path, out_dir: str | Path, *, progress: bool = True) -> Path:
    """Write the last checkpoint of `run_dir` to `out_dir` as merged HF weights + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} exists and is not empty; export into a new directory")
    folder, spec = last_checkpoint(run_dir)
    if (folder / "adapter_config.json").is_file():
        from sharpen.models import resolve_model
        from sharpen.models.lora import merged_model

        base = AutoModelForCausalLM.from_pretrained(str(resolve_model(spec, progress=progress)), dtype=torch.float32)
        model = merged_model(base, folder)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(folder).save_pretrained(out_dir)
    return out_dir
