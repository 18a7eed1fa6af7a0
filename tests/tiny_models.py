"""The tests' tiny random Llama models and tiny BPE tokenizers, built in one place.

Many tests score, train, evaluate or save a tiny random Llama. Each used to write its
``LlamaConfig`` by hand, with the same six or eight fields a little apart; here the shape is
written once (d 32, 2 layers, 4 heads over 2 key/value heads, MLP 64, 64 positions) and a test
names only what it changes, so that its difference from the others is visible at the call site.

Seeding is explicit so that each test's numbers depend only on its arguments: the weights are
those drawn right after ``torch.manual_seed(seed)``; ``seed=None`` draws from the RNG as it stands
(a second model after a first, or a test that seeds once for a loop). ``attn_implementation``
"sdpa" is what transformers picks by default on CPU: passing it gives the same weights and the
same saved ``config.json`` as leaving it out, so the sites that left it out keep their numbers.
The tokenizers are byte-level BPEs trained in milliseconds on a test's own text, with the same
three special tokens everywhere, so that the models' token ids (BOS 0, EOS 1, PAD 2) fit them all.
transformers and tokenizers are imported inside the functions: test modules that import them
lazily stay fast to collect.
"""

from __future__ import annotations

import os

import torch


def tiny_llama(
    vocab_size: int,
    seed: int | None = 0,
    *,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 64,
    max_position_embeddings: int = 64,
    attn_implementation: str = "sdpa",
    **config,
):
    """A random ``LlamaForCausalLM`` in eval mode and float32, seeded with ``torch.manual_seed(seed)``
    right before construction (not seeded when ``seed`` is None). ``config``: any other
    ``LlamaConfig`` field (token ids, ``initializer_range``, ``tie_word_embeddings``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        attn_implementation=attn_implementation,
        **config,
    )
    if seed is not None:
        torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).float().eval()


def save_tiny_llama(path, vocab_size: int, seed: int | None = 0, tokenizer=None, **kw):
    """:func:`tiny_llama` (same arguments, ``kw``) saved to the folder ``path`` with
    ``save_pretrained``, and with ``tokenizer`` when given: a tokenizer object, or the folder of one
    (loaded with ``AutoTokenizer``), so that the folder loads as users load a model. Returns the model."""
    model = tiny_llama(vocab_size, seed, **kw)
    model.save_pretrained(path)
    if tokenizer is not None:
        if isinstance(tokenizer, str | os.PathLike):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        tokenizer.save_pretrained(path)
    return model


def tiny_bpe(texts, vocab_size: int, *, split_digits: bool = False, add_bos: bool = False):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` (deterministic: the same
    texts give the same tokenizer) with ``<s>`` = 0 (BOS), ``</s>`` = 1 (EOS), ``<pad>`` = 2 (PAD).
    ``split_digits``: digits one per token, like the demo's code tokenizer (numbers in task prompts
    stay short and comparable); ``add_bos``: ``<s>`` is added to every encoding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split_digits:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_mixtral(vocab_size: int, seed: int | None = 0, *, router_aux_loss_coef: float = 0.5, **config):
    """A random ``MixtralForCausalLM`` (d 32, 2 layers, 4 experts, top-2) that returns its router
    loss (``output_router_logits=True``), as a model trained for it is saved; ``config``: any other
    ``MixtralConfig`` field (``max_position_embeddings`` defaults to 128)."""
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg = MixtralConfig(
        **{
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_local_experts": 4,
            "num_experts_per_tok": 2,
            "max_position_embeddings": 128,
            "output_router_logits": True,
            "router_aux_loss_coef": router_aux_loss_coef,
            **config,
        }
    )
    if seed is not None:
        torch.manual_seed(seed)
    return MixtralForCausalLM(cfg)
