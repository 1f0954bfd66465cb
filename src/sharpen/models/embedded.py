"""The embedded default model: a tiny Llama that sharpen builds, trains and caches itself.

No model hub is reachable on the machines sharpen is developed on, and self-improvement is
best measured on a model that is *weak but not hopeless*: it knows more than it says
(pass@8 far above pass@1). So sharpen makes one. A character-level tokenizer and a 4-layer
Llama (~0.83M parameters) are trained (about 16 minutes on 2 cores) on a mixture of procedural tasks
in five formats:

- solve:    user "37+58="                   → assistant "95"   (60% of targets have one
  digit replaced at random, which is what makes the model unsure yet well-informed)
- judge:    user "37+58=96 right?"          → assistant "no"   (clean labels)
- compare:  user "37+58= A:96 B:95 which?"  → assistant "B"    (clean labels, the right
  answer shown first or second at random)
- retry:    user "37+58=", assistant "96", user "wrong" → assistant "95" (a new answer)
- facts:    user "Who is Kavo?" → assistant "Kavo lives in Holt and is a baker. I do not know
  its pet or food." (the `facts` task's people, train and eval splits alike: the knowledge a
  later run is measured on; 25% of the known attributes stated with a wrong value and 10% of
  the unknown ones guessed, so it knows more than it says here too)

The result is saved with `save_pretrained` (model, tokenizer, chat template) in a cache
directory keyed by the build recipe, so the Auto classes load it like any checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from sharpen.models.formats import EMBEDDED, retry_messages
from sharpen.tasks import Problem, Task, get_task
from sharpen.tasks.base import Message
from sharpen.tasks.facts import noisy_answer, person_of

SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>")
CHARS = tuple(chr(i) for i in range(32, 127)) + ("\n",)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
QUICKSTART_TASK = "addition"
"""The task the default model is measured on, and the quickstart trains on."""
QUICKSTART_OPTIONS: dict = {"digits": 2}


@dataclass(frozen=True)
class MixturePart:
    """One slice of the training mixture: a format applied to a task's train split."""

    format: str
    """"solve", "judge", "compare", "retry" or "facts"."""
    task: str
    options: dict = field(default_factory=dict)
    weight: float = 1.0
    splits: tuple[str, ...] = ("train",)
    """The task splits its problems come from: a knowledge task teaches the facts of both (the
    held-out questions of a later training run are about facts the model learned here)."""


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the built model; its hash names the cache directory."""

    version: int = 1
    seed: int = 0
    layers: int = 4
    width: int = 128
    heads: int = 4
    mlp: int = 352
    max_positions: int = 128
    steps: int = 4000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    noise: float = 0.6
    """Fraction of solve and retry targets with one digit replaced at random."""
    fact_wrong: float = 0.25
    """Facts answers: chance that a known attribute is stated with a wrong value."""
    fact_guess: float = 0.1
    """Facts answers: chance that an unknown attribute is stated with a guessed value instead
    of "I do not know"."""
    mixture: tuple[MixturePart, ...] = (
        MixturePart("solve", "addition", {"digits": 2}, 0.51),
        MixturePart("solve", "addition", {"digits": 1}, 0.02),
        MixturePart("solve", "multiplication", {"digits": 1}, 0.06),
        MixturePart("solve", "countdown", {"numbers": 3}, 0.05),
        MixturePart("judge", "addition", {"digits": 2}, 0.08),
        MixturePart("compare", "addition", {"digits": 2}, 0.08),
        MixturePart("retry", "addition", {"digits": 2}, 0.20),
        MixturePart("facts", "facts", {}, 0.6, splits=("train", "eval")),
    )

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_root() -> Path:
    """$SHARPEN_CACHE, else the user's cache directory (e.g. ~/.cache/sharpen)."""
    if os.environ.get("SHARPEN_CACHE"):
        return Path(os.environ["SHARPEN_CACHE"])
    import platformdirs

    return Path(platformdirs.user_cache_dir("sharpen"))


def model_dir(recipe: Recipe = Recipe()) -> Path:
    return cache_root() / "models" / f"default-{recipe.key()}"


# ---- tokenizer ------------------------------------------------------------------------------


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer (printable ASCII + newline) with a chat template."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="<|end|>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


class ConversationEncoder:
    """Token ids and loss mask of a conversation under CHAT_TEMPLATE, without Jinja.

    Equal to `apply_chat_template(messages)` (a test checks it); the mask is 1 on assistant
    content and its end token: the tokens a model learns to produce.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerFast) -> None:
        vocab = tokenizer.get_vocab()
        self.chars = {c: vocab[c] for c in CHARS}
        self.unk = vocab["<unk>"]
        self.end = vocab["<|end|>"]
        self.role = {r: vocab[f"<|{r}|>"] for r in ("system", "user", "assistant")}

    def text(self, s: str) -> list[int]:
        return [self.chars.get(c, self.unk) for c in s]

    def __call__(self, messages: list[Message]) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        mask: list[int] = []
        for m in messages:
            body = self.text(m["content"])
            ids.append(self.role[m["role"]])
            mask.append(0)
            if m["role"] == "assistant":
                ids += body + [self.end]
                mask += [1] * (len(body) + 1)
            else:
                ids += body
                mask += [0] * len(body)
        return ids, mask


# ---- training data --------------------------------------------------------------------------


def corrupt(text: str, rng: random.Random) -> str:
    """Replace one digit of `text` by a different digit (text without digits is returned)."""
    spots = [i for i, c in enumerate(text) if c.isdigit()]
    if not spots:
        return text
    i = rng.choice(spots)
    digit = rng.choice([d for d in "0123456789" if d != text[i]])
    return text[:i] + digit + text[i + 1 :]


def example(part: MixturePart, task: Task, problem: Problem, rng: random.Random, noise: float,
            fact_wrong: float = 0.0, fact_guess: float = 0.0) -> list[Message]:
    """One training conversation of the given format (the last assistant turn is the target)."""
    if part.format == "facts":
        answer = noisy_answer(person_of(problem), rng, fact_wrong, fact_guess)
        return [{"role": "user", "content": problem.prompt}, {"role": "assistant", "content": answer}]
    gold = task.solution(problem)
    noisy = corrupt(gold, rng) if rng.random() < noise else gold
    if part.format == "solve":
        return [{"role": "user", "content": problem.prompt}, {"role": "assistant", "content": noisy}]
    if part.format == "judge":
        right = rng.random() < 0.5
        shown = gold if right else corrupt(gold, rng)
        verdict = EMBEDDED.judge_yes if right or shown == gold else EMBEDDED.judge_no
        return EMBEDDED.judge_messages(problem.prompt, shown) + [{"role": "assistant", "content": verdict}]
    if part.format == "compare":
        wrong = corrupt(gold, rng)
        gold_first = rng.random() < 0.5
        first, second = (gold, wrong) if gold_first else (wrong, gold)
        verdict = EMBEDDED.compare_first if gold_first else EMBEDDED.compare_second
        return EMBEDDED.compare_messages(problem.prompt, first, second) + [{"role": "assistant", "content": verdict}]
    if part.format == "retry":
        wrong = [corrupt(gold, rng)]
        while noisy in wrong:  # a retry never repeats an answer already called wrong
            noisy = corrupt(gold, rng)
        history = retry_messages(problem.prompt, wrong, [EMBEDDED.retry_feedback] * len(wrong))
        return history + [{"role": "assistant", "content": noisy}]
    raise ValueError(f"unknown mixture format {part.format!r}; use solve, judge, compare, retry or facts")


class Mixture:
    """Draws training conversations from the recipe's mixture, deterministically for a seed."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.rng = random.Random(recipe.seed)
        self.parts = list(recipe.mixture)
        self.weights = [p.weight for p in self.parts]
        self.tasks: list[Task] = []
        self.pools: list[list[Problem]] = []
        for i, part in enumerate(self.parts):
            task = get_task(part.task, **part.options)
            if task.solution is None:
                raise ValueError(f"task {part.task!r} has no solution(); it cannot train the default model")
            self.tasks.append(task)
            self.pools.append([p for split in part.splits for p in task.problems(split, 4000, recipe.seed + i)])

    def batch(self, size: int) -> list[list[Message]]:
        """`size` conversations of one mixture part, drawn by weight: one part per batch keeps
        the padded length short (a retry conversation is three times a solve's length)."""
        i = self.rng.choices(range(len(self.parts)), weights=self.weights)[0]
        part, task, pool = self.parts[i], self.tasks[i], self.pools[i]
        r = self.recipe
        return [example(part, task, self.rng.choice(pool), self.rng, r.noise, r.fact_wrong, r.fact_guess)
                for _ in range(size)]


# ---- model and training ---------------------------------------------------------------------


def build_config(recipe: Recipe, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.width,
        intermediate_size=recipe.mlp,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.heads,
        max_position_embeddings=recipe.max_positions,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def lr_at(step: int, recipe: Recipe) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def batch_tensors(rows: list[tuple[list[int], list[int]]], pad: int) -> tuple[torch.Tensor, ...]:
    """Right-padded (input_ids, attention_mask, loss_mask), each (B, L)."""
    L = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([x + [pad] * (L - len(x)) for x, _ in rows])  # (B, L)
    attn = torch.tensor([[1] * len(x) + [0] * (L - len(x)) for x, _ in rows])  # (B, L)
    loss = torch.tensor([m + [0] * (L - len(m)) for _, m in rows], dtype=torch.float)  # (B, L)
    return ids, attn, loss


def train(recipe: Recipe, progress: bool = True) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, dict]:
    """Build the tokenizer and train the model from scratch; deterministic for recipe.seed."""
    torch.manual_seed(recipe.seed)
    tokenizer = build_tokenizer()
    model = LlamaForCausalLM(build_config(recipe, tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    encode = ConversationEncoder(tokenizer)
    mixture = Mixture(recipe)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr, betas=(0.9, 0.95),
    )
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("building the default model"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn(),
        disable=not progress,
    )
    start, loss_ema = time.perf_counter(), float("nan")
    model.train()
    with bar:
        job = bar.add_task("build", total=recipe.steps, loss=float("nan"))
        for step in range(recipe.steps):
            ids, attn, loss_mask = batch_tensors([encode(c) for c in mixture.batch(recipe.batch_size)],
                                                 tokenizer.pad_token_id)
            logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]  # (B, L-1, V)
            nll = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), ids[:, 1:], reduction="none"
            )  # (B, L-1)
            mask = loss_mask[:, 1:]  # (B, L-1) targets are the next tokens
            loss = (nll * mask).sum() / mask.sum()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, recipe)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            loss_ema = loss.item() if step == 0 else 0.98 * loss_ema + 0.02 * loss.item()
            bar.update(job, advance=1, loss=loss_ema)
    model.eval()
    info = {"seconds": round(time.perf_counter() - start, 1), "final_loss": round(loss_ema, 4),
            "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__}
    return model, tokenizer, info


def ensure_default_model(recipe: Recipe = Recipe(), progress: bool = True, rebuild: bool = False) -> Path:
    """The cached default model's directory, building it first when missing."""
    target = model_dir(recipe)
    if (target / "config.json").exists() and not rebuild:
        return target
    model, tokenizer, info = train(recipe, progress=progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "sharpen_recipe.json").write_text(json.dumps(asdict(recipe), indent=2))
    (staging / "sharpen_build.json").write_text(json.dumps(info, indent=2))
    if rebuild:
        shutil.rmtree(target, ignore_errors=True)
    try:
        staging.rename(target)  # atomic: a reader sees no half-written model
    except OSError:  # another process finished the same build first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_info(path: Path) -> Optional[dict]:
    """What the build recorded (seconds, final loss, parameters), if it was a sharpen build."""
    info = Path(path) / "sharpen_build.json"
    return json.loads(info.read_text()) if info.exists() else None
