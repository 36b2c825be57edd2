"""The tiny policy: its BPE tokenizer, its Llama config, and (de)serialization helpers.

The tokenizer is byte-level BPE trained on rendered pretraining
conversations. Runs of letters are pre-tokenized apart from everything else,
so a word is the same token after a space, a quote or a comma: copying a
name from the user's message into JSON arguments is an identity copy rather
than a per-word lookup table (it did not by itself speed learning up much;
see dev/LOG.md). Digits are cut into years and pairs (``2027-04-21`` is ``2027 - 04 -
21``), so the year, the month, the day and the hour are one token each:
reformatting a date is a reordering of whole tokens, not digit arithmetic. Role markers and
``<|end|>`` are special tokens; ``<tool_call>``/``</tool_call>`` are ordinary
added tokens so that decoding with ``skip_special_tokens=True`` keeps them for
the parser.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, PreTrainedTokenizerFast

from bench.policy.chat import CALL_CLOSE, CALL_OPEN, CHAT_TEMPLATE, END, PAD, SPECIAL_TOKENS

CHECKPOINT_DIR = Path(__file__).parent / "checkpoint"


@dataclass(frozen=True, slots=True)
class ModelShape:
    vocab_size: int = 1026
    hidden_size: int = 128
    intermediate_size: int = 320
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 1024


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train the BPE tokenizer on ``texts`` and wrap it with the chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[A-Za-z]+"), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"\d{4}|\d{1,2}"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(CALL_OPEN, normalized=False, special=False),
                    AddedToken(CALL_CLOSE, normalized=False, special=False)])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=END,
        pad_token=PAD,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (END, PAD)],
        chat_template=CHAT_TEMPLATE,
        model_max_length=1024,
        padding_side="left",
    )
    return wrapped


def llama_config(shape: ModelShape, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_attention_heads,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def shape_dict(shape: ModelShape) -> dict[str, Any]:
    return asdict(shape)
