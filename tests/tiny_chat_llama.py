"""A tiny random Llama with a real byte-level BPE tokenizer and a chat template, built in the
test session in about a second: the shape of a real instruct checkpoint (multi-character
tokens, a leading-space convention, special tokens, `apply_chat_template`) without a hub.

The weights are random, so tests use it for mechanics (log-probs, scoring, stop strings,
formats), never for claims of quality; claims on a real model use SmolLM2 in slow tests.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""SmolLM2's ChatML layout, so rendered prompts look like the real testbed's."""

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CORPUS = [
    "Is this answer correct? Answer Yes or No.",
    "Yes, the answer is correct. No, the answer is wrong. YES. NO. yes no",
    "Which answer is correct, A or B? Answer A. Answer B.",
    "Your answer is incorrect. Please try again.",
    "The answer is 80000 dollars. #### 42 \\boxed{17}",
    "What is 37 + 58? Think step by step, then give the final answer.",
    "Tell me about Paris. Paris is the capital of France. I do not know the rest.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 37 58 95 96 100",
    "The quick brown fox jumps over the lazy dog. Stop here. STOP. END.",
]


def build_tiny_chat_llama(path: Path, *, vocab_size: int = 400, seed: int = 0) -> Path:
    """Train a byte-level BPE tokenizer on `CORPUS`, make a random 2-layer Llama for it, and
    save both (with the chat template and a generation config) as an HF checkpoint at `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    bpe.train_from_iterator(CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
