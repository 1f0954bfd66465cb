"""LoRA through peft (issue 11, point 2): only the adapter trains, the KL reference is the
adapter switched off, checkpoints hold the adapter and resume from it, `sharpen export` writes
merged weights that give the trained model's log-probs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sharpen.cli import main
from sharpen.config import ConfigError
from sharpen.export import ExportError, export_run
from sharpen.learners.base import ReferenceModel, adamw, reference_logprobs
from sharpen.learners.sft import Example, fine_tune
from sharpen.learners.training import LoraConfig, TrainingConfig, prepare_policy
from sharpen.loop import RunConfig, RunStopped, run
from sharpen.models import SamplingParams
from sharpen.models.hf import HFPolicy
from sharpen.models.lora import is_lora, load_weights
from sharpen.runs import RunStore

PROMPTS = ["What is 3 + 4?", "What is 10 + 2?"]


def lora_policy(model_dir: Path, **options) -> HFPolicy:
    policy = HFPolicy.load(model_dir, device="cpu", seed=0)
    prepare_policy(policy, TrainingConfig(lora=LoraConfig(r=4, alpha=8.0, **options)))
    return policy


def rows(policy) -> tuple[list[list[int]], list[list[int]]]:
    groups = policy.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=6, seed=0))
    return ([policy.encode(p) for p, g in zip(PROMPTS, groups) for _ in g],
            [list(c.token_ids) for g in groups for c in g])


def train(policy, steps: int = 3) -> None:
    prompts, completions = rows(policy)
    examples = [Example(tuple(p), tuple(c)) for p, c in zip(prompts, completions)]
    optimizer = adamw(policy.model, 1e-2)
    fine_tune(policy, optimizer, examples, epochs=steps, batch_size=len(examples), lr=1e-2, grad_clip=1.0, seed=0)


def scores(policy, prompts, completions) -> torch.Tensor:
    with torch.no_grad():
        return policy.score_tokens(prompts, completions).logprobs


def test_lora_training_changes_only_the_adapter(tiny_chat_dir):
    policy = lora_policy(tiny_chat_dir)
    assert is_lora(policy.model)
    before = {name: p.detach().clone() for name, p in policy.model.named_parameters()}
    trainable = {name for name, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert len(adamw(policy.model, 1e-3).param_groups[0]["params"]) == len(trainable)
    train(policy)
    after = dict(policy.model.named_parameters())
    for name, value in before.items():
        if name in trainable:
            assert not torch.equal(after[name], value), f"{name} did not train"
        else:
            assert torch.equal(after[name], value), f"{name} changed"


def test_the_kl_reference_is_the_base_model_with_the_adapter_off(tiny_chat_dir):
    policy = lora_policy(tiny_chat_dir)
    reference = ReferenceModel(policy)
    assert reference.copy is None  # no copy of the weights
    train(policy)
    prompts, completions = rows(policy)
    base = HFPolicy.load(tiny_chat_dir, device="cpu")
    ref = reference_logprobs(policy, reference, prompts, completions)
    torch.testing.assert_close(ref, scores(base, prompts, completions), atol=1e-5, rtol=1e-5)
    assert (scores(policy, prompts, completions) - ref).abs().max() > 1e-3  # the adapter is back on after


CONFIG = """\
# sharpen run {path}
model: {model}
steps: 4
problems_per_step: 4
sampling: {{group_size: 4}}
eval: {{every: 4, problems: 4, samples: 2, ks: [1, 2]}}
checkpoint_every: 2
threads: 1
log_completions: 1
"""
LORA = ("learner: {kind: rejection_sampling, select: best, lr: 1.0e-2, micro_batch_tokens: 64,\n"
        "          lora: {r: 4, alpha: 8, target_modules: [q_proj, v_proj, up_proj]}}\n")


def write_config(tmp_path: Path, model: Path, learner: str = LORA) -> Path:
    path = tmp_path / "lora.yaml"
    path.write_text(CONFIG.format(path=path, model=model) + learner)
    return path


class Killed(Exception):
    """Stands for a kill between two steps."""


def test_lora_checkpoints_hold_the_adapter_and_a_resumed_run_matches(tmp_path, tiny_model_dir, monkeypatch):
    from sharpen.loop import Trainer

    cfg = write_config(tmp_path, tiny_model_dir)
    straight = run(cfg, [f"run_dir={tmp_path / 'straight'}"], progress=False)
    folder = Path(straight["final_checkpoint"])
    kept = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "learner_state.pt"} <= kept
    assert not (folder / "model.safetensors").exists()

    original = Trainer.train_step

    def killed_at_three(self, step):
        if step == 3:
            raise Killed(step)
        return original(self, step)

    monkeypatch.setattr(Trainer, "train_step", killed_at_three)
    with pytest.raises(Killed):
        run(cfg, [f"run_dir={tmp_path / 'killed'}"], progress=False)
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = run(cfg, [f"run_dir={tmp_path / 'killed'}"], resume=True, progress=False)
    assert resumed["final"] == straight["final"]
    rewards = [r.value for r in RunStore(tmp_path / "killed").metrics("reward/mean")]
    assert rewards == [r.value for r in RunStore(tmp_path / "straight").metrics("reward/mean")]

    # sharpen export: merged weights that give the trained adapter model's log-probs
    out = tmp_path / "exported"
    assert main(["export", str(tmp_path / "straight"), str(out)]) == 0
    merged = HFPolicy(AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out))
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
    trained = lora_policy(tiny_model_dir, target_modules=["q_proj", "v_proj", "up_proj"])
    load_weights(trained.model, folder)
    prompts = [trained.encode(p) for p in ("3+4=", "12+30=", "7+8=")]
    completions = [[5, 6, 3], [7, 8], [9, 10, 11, 3]]
    expected = scores(trained, prompts, completions)
    torch.testing.assert_close(scores(merged, prompts, completions), expected, atol=1e-5, rtol=1e-5)
    base = HFPolicy.load(tiny_model_dir, device="cpu")
    assert (scores(base, prompts, completions) - expected).abs().max() > 1e-4  # training did move the model
    with pytest.raises(ExportError, match="not empty"):
        export_run(tmp_path / "straight", out)
    with pytest.raises(ExportError, match="not a run directory"):
        export_run(tmp_path, tmp_path / "other")


def test_full_fine_tuning_exports_its_checkpoint(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir, learner="learner: {lr: 1.0e-2}\n")
    summary = run(cfg, [f"run_dir={tmp_path / 'run'}", "steps=2"], progress=False)
    out = export_run(tmp_path / "run", tmp_path / "out", progress=False)
    exported = AutoModelForCausalLM.from_pretrained(out).state_dict()
    trained = AutoModelForCausalLM.from_pretrained(summary["final_checkpoint"]).state_dict()
    assert exported.keys() == trained.keys() and all(torch.equal(exported[k], trained[k]) for k in trained)


@pytest.mark.parametrize("lora,key,problem", [
    ("{r: 0}", "learner.lora.r", "Input should be greater than or equal to 1"),
    ("{dropout: 1.0}", "learner.lora.dropout", "Input should be less than 1"),
    ("{target_modules: []}", "learner.lora.target_modules", "list at least one layer name"),
    ("{target_modules: [q_proj, '']}", "learner.lora.target_modules", "list the layer names, each a non-empty string"),
    ("{rank: 4}", "learner.lora.rank", "unknown key; known keys there: r, alpha, dropout, target_modules"),
])
def test_lora_config_errors_name_the_file_line_and_key(tmp_path, lora, key, problem):
    from sharpen.config import load_config

    path = tmp_path / "bad.yaml"
    path.write_text(f"steps: 2\nlearner:\n  kind: rejection_sampling\n  lora: {lora}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, RunConfig)
    assert f"{path}:4: {key}: {problem}" in str(error.value)


def test_a_lora_target_that_names_no_layer_stops_the_run(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir, learner=LORA.replace("[q_proj, v_proj, up_proj]", "[attention]"))
    with pytest.raises(RunStopped, match="learner.lora.target_modules.*attention.*linear layers are named .*q_proj"):
        run(cfg, [f"run_dir={tmp_path / 'run'}"], progress=False)
