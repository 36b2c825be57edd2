"""A tiny real causal LM for tests: a byte-level BPE tokenizer with a chat
template in the Qwen/Hermes style, and a 2-layer Llama trained for a few
dozen steps to answer two fixed prompts (one with a tool call).

Built once per test session into the session's temp folder (fixtures
`tiny_base` and `tiny_artifacts`, registered in tests/conftest.py; torch and
transformers are imported only when a test asks for them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

END = "<|end|>"
PAD = "<pad>"
SPECIAL = (PAD, END, "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")

TEMPLATE = (
    "{%- if tools -%}<|system|>\n# Tools\n<tools>\n"
    "{%- for t in tools -%}{{ (t.function if t.function is defined else t) | tojson }}\n{%- endfor -%}"
    "</tools>\nCall a tool as <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>\n"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}<|assistant|>\n{{ m.content }}"
    "{%- for tc in m.tool_calls or [] -%}<tool_call>{{ {'name': tc.function.name, "
    "'arguments': tc.function.arguments} | tojson }}</tool_call>{%- endfor -%}<|end|>\n"
    "{%- else -%}<|{{ m.role }}|>\n{{ m.content }}\n{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>\n{%- endif -%}"
)

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TOOL_PROMPT = [{"role": "user", "content": "Weather in Oslo?"}]
TOOL_ANSWER = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
TEXT_PROMPT = [{"role": "user", "content": "Say hello."}]
TEXT_ANSWER = "Hello there, friend! Ça va?"

CORPUS = [
    TOOL_ANSWER, TEXT_ANSWER, "Weather in Oslo? Say hello. Tokyo time city name arguments",
    json.dumps(WEATHER_TOOL["function"]), "<|system|>\n# Tools\n<tools>\n</tools>\n",
    "the quick brown fox jumps over the lazy dog 0123456789 {}[]\":,",
]


def build_tokenizer() -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=list(SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    tok.add_tokens([AddedToken("<tool_call>", normalized=False, special=False),
                    AddedToken("</tool_call>", normalized=False, special=False)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=END, pad_token=PAD,
        additional_special_tokens=list(SPECIAL[2:]), chat_template=TEMPLATE,
    )


def _example(tok: Any, messages: list[dict[str, Any]], tools: Any,
             answer: str) -> tuple[list[int], list[int]]:
    prompt = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                     tokenize=False)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    a = tok(answer + END, add_special_tokens=False)["input_ids"]
    return p + a, [-100] * len(p) + a


def build_base(out: Path, *, steps: int = 60, hidden: int = 64, lr: float = 1e-2) -> Path:
    """Train and save the tiny model; returns its folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = build_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=None,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    examples = [_example(tok, TOOL_PROMPT, [WEATHER_TOOL], TOOL_ANSWER),
                _example(tok, TEXT_PROMPT, None, TEXT_ANSWER)]
    width = max(len(ids) for ids, _ in examples)
    pad = int(tok.pad_token_id)
    ids = torch.tensor([[pad] * (width - len(i)) + i for i, _ in examples])
    labels = torch.tensor([[-100] * (width - len(lab)) + lab for _, lab in examples])
    mask = (torch.arange(width)[None, :] >= torch.tensor([[width - len(i)] for i, _ in examples]))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask.long(), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_lora(base_dir: Path, out: Path, *, seed: int, scale: float = 0.3, r: int = 4) -> Path:
    """A LoRA adapter with random A and B (so that it changes the outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(base_dir)
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj", "down_proj"],
                     lora_dropout=0.0)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                p.normal_(0.0, scale)
    peft_model.save_pretrained(out)
    return out


def make_delta(base_dir: Path, out: Path, *, seed: int, scale: float = 0.05) -> Path:
    """A TTT-style weight delta on every MLP down projection."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(base_dir)
    delta = {n: torch.randn_like(p) * scale for n, p in model.named_parameters()
             if n.endswith("mlp.down_proj.weight")}
    out.mkdir(parents=True, exist_ok=True)
    save_file(delta, str(out / "delta.safetensors"))
    return out


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "tiny-llm"
    if not (root / "model.safetensors").is_file():
        build_base(root)
    return root


def _quiet(fn: Any, *args: Any, **kw: Any) -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return fn(*args, **kw)


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_base: Path) -> dict[str, Path]:
    """Three LoRA adapters (seeds 1-3), one weight delta, and a LoRA for another base."""
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    root = tiny_base.parent / "tiny-artifacts"
    out = {f"lora{i}": root / f"lora{i}" for i in (1, 2, 3)}
    out["delta"] = root / "delta"
    out["other_base"] = root / "other-base"
    out["other_lora"] = root / "other-lora"
    if not (out["other_lora"] / "adapter_config.json").is_file():
        for i in (1, 2, 3):
            _quiet(make_lora, tiny_base, out[f"lora{i}"], seed=i)
        make_delta(tiny_base, out["delta"], seed=7)
        # An untrained model of another width: its adapters have the wrong shapes.
        tok = PreTrainedTokenizerFast.from_pretrained(str(tiny_base))
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                          max_position_embeddings=512, tie_word_embeddings=True)
        LlamaForCausalLM(cfg).save_pretrained(out["other_base"])
        _quiet(make_lora, out["other_base"], out["other_lora"], seed=9)
    return out
