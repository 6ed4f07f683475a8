"""The tiny policy of the embedded default: a character-level GPT-2, built from a config.

Small enough to train from scratch on 2 CPU cores in a few minutes, saved as a normal
Hugging Face model directory (config, weights, tokenizer), so every backend loads it like any
Hub model. Nothing is downloaded.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
# Every character the arith world and its self-evaluation question use.
ALPHABET = "0123456789+-*/=()?:. \nQAOKyesno"


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate([PAD, UNK, EOS, *ALPHABET])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # One token per character, newlines included ([\s\S] matches them; "." would not).
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=EOS,
        bos_token=EOS,
        padding_side="left",  # decoder-only batches are padded on the left for generation
        model_max_length=4096,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, n_layer: int, n_embd: int, n_head: int,
                n_positions: int, dropout: float = 0.0) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)
