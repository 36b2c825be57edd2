"""In-place TTT (modeling/ttt.py) on tiny random Llama, Qwen2 and Qwen3 models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from modeling.ttt import TTT, TTTMLP, attach, load_ttt
from modeling.ttt_config import TTTConfig

VOCAB = 97


def tiny(arch: str = "llama", seed: int = 0) -> Any:
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    torch.manual_seed(seed)
    common: dict[str, Any] = {
        "vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}
    builders = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
                "qwen3": (Qwen3Config, Qwen3ForCausalLM)}
    cfg_cls, model_cls = builders[arch]
    extra = {"head_dim": 8} if arch == "qwen3" else {}
    return model_cls(cfg_cls(**common, **extra)).eval()


def randomise(handle: TTT, seed: int = 1, scale: float = 0.3) -> None:
    """Trained-looking TTT parameters (the zero conv would make every update vanish)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in handle.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale + (torch.eye(p.shape[0])
                    if p.dim() == 2 else 0.0))


def ids(n: int, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


def logits(model: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=x).logits  # type: ignore[no-any-return]


def cached(model: Any, x: torch.Tensor, pieces: list[int]) -> torch.Tensor:
    """Feed `x` in pieces, with the KV cache carried along."""
    from transformers import DynamicCache

    assert sum(pieces) == x.shape[1]
    cache = DynamicCache()
    outs, pos = [], 0
    with torch.no_grad():
        for n in pieces:
            outs.append(model(input_ids=x[:, pos:pos + n], cache=cache, use_cache=True).logits)
            pos += n
    return torch.cat(outs, dim=1)


def streamed(model: Any, handle: TTT, x: torch.Tensor, pieces: list[int]) -> torch.Tensor:
    """The same through the streaming path of the TTT layers (one fresh state)."""
    state = handle.new_state()
    with handle.stream(state):
        out = cached(model, x, pieces)
    assert state.tokens == x.shape[1]
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_zero_initialised_ttt_gives_exactly_the_base_logits(arch: str) -> None:
    model = tiny(arch)
    x = ids(70)
    base = logits(model, x)
    base_cached = cached(model, x, [5, 40, 25])
    handle = attach(model, TTTConfig(every=2, chunk_size=16))
    assert sorted(handle.modules) == [1, 3]
    assert all(isinstance(model.model.layers[i].mlp, TTTMLP) for i in (1, 3))
    assert torch.equal(logits(model, x), base)
    assert torch.equal(streamed(model, handle, x, [5, 40, 25]), base_cached)
    model.train()
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, base)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("tau", [None, 0.05])
@pytest.mark.parametrize("target", ["hidden", "embedding"])
def test_parallel_path_equals_streaming_path(arch: str, tau: float | None, target: str) -> None:
    model = tiny(arch)
    handle = attach(model, TTTConfig(layers=[0, 2], chunk_size=16, eta=3.0, tau=tau,
                                     target=target))
    randomise(handle)
    x = ids(150)
    base = tiny(arch)  # the same seed: the model without TTT
    parallel = logits(model, x)
    assert not torch.allclose(parallel[:, 16:], logits(base, x)[:, 16:], atol=1e-3)
    assert torch.allclose(parallel[:, :16], logits(base, x)[:, :16], atol=1e-5)  # chunk 0
    pieces = [7, 30, 1, 1, 45, 66]  # no piece boundary falls on a chunk boundary
    s = streamed(model, handle, x, pieces)
    assert torch.allclose(s, parallel, atol=1e-4, rtol=1e-4), (s - parallel).abs().max()
    one_by_one = streamed(model, handle, x[:, :40], [1] * 40)
    assert torch.allclose(one_by_one, parallel[:, :40], atol=1e-4, rtol=1e-4)


def test_a_later_chunk_never_changes_an_earlier_chunks_output() -> None:
    """At the layer itself (the MLP is position-wise, so only TTT could carry a change)."""
    model = tiny()
    handle = attach(model, TTTConfig(layers=[1], chunk_size=8, tau=None))
    randomise(handle)
    layer = handle.modules[1]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 40, 32, generator=g)
    y = x.clone()
    y[0, 19] += torch.randn(32, generator=g)  # a token in chunk 2 (positions 16-23)
    with torch.no_grad():
        a, b = layer(x), layer(y)
    same = [p for p in range(40) if p != 19]
    assert torch.equal(a[0, [p for p in same if p < 24]], b[0, [p for p in same if p < 24]])
    later = (a[0, 24:] - b[0, 24:]).abs().amax(dim=-1)
    assert bool((later > 1e-6).all())  # every position of chunks 3 and 4 saw the update
    # the same through the streaming path
    for inp in (x, y):
        state = handle.new_state()
        with torch.no_grad(), handle.stream(state):
            out = torch.cat([layer(inp[:, :10]), layer(inp[:, 10:21]), layer(inp[:, 21:])], dim=1)
        assert torch.allclose(out, layer(inp).detach(), atol=1e-5)


def test_gradients_reach_the_conv_and_w_target() -> None:
    model = tiny()
    handle = attach(model, TTTConfig(every=2, chunk_size=16))
    model.train()
    x = ids(64)
    # from the zero initialisation, the conv gets a gradient (W_target's is zero: V = 0)
    model(input_ids=x, labels=x).loss.backward()
    for i, m in handle.modules.items():
        assert m.ttt_conv.weight.grad is not None and m.ttt_conv.weight.grad.abs().sum() > 0, i
    model.zero_grad()
    randomise(handle)
    model(input_ids=x, labels=x).loss.backward()
    for i, m in handle.modules.items():
        assert m.ttt_conv.weight.grad is not None and m.ttt_conv.weight.grad.abs().sum() > 0, i
        grad = m.ttt_target.weight.grad
        assert grad is not None and grad.abs().sum() > 0, i


def test_clipping_bounds_every_update() -> None:
    tau = 0.02
    model = tiny()
    handle = attach(model, TTTConfig(every=2, chunk_size=16, tau=tau))
    randomise(handle)
    x = ids(100)
    seen: list[float] = []
    # feed chunk by chunk (no KV cache needed: the layer state is what is checked)
    state = handle.new_state()
    with torch.no_grad():
        for k in range(0, 96, 16):
            before = {i: s.delta.clone() for i, s in state.layers.items()}
            with handle.stream(state):
                model(input_ids=x[:, k:k + 16])
            for i, s in state.layers.items():
                seen.append(float(torch.linalg.matrix_norm(s.delta[0] - before[i][0])))
    assert len(seen) == 6 * len(handle.modules)
    assert max(seen) <= tau * (1 + 1e-5)
    assert min(seen) > tau * 0.99  # they were all larger than tau before clipping
    assert all(s.updates == 6 and s.clipped == 6 for s in state.layers.values())
    # one chunk, by hand: dW = eta V^T Z, scaled to norm tau
    layer = handle.modules[1]
    h = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        z = layer.act_fn(layer.gate_proj(h)) * layer.up_proj(h)
        conv = torch.nn.functional.conv1d(h.transpose(1, 2), layer.ttt_conv.weight, padding=2,
                                          groups=32).transpose(1, 2)
        v = conv @ layer.ttt_target.weight.T
        raw = 3.0 * v[0].T @ z[0]
        assert raw.shape == layer.down_proj.weight.shape  # hidden x intermediate
        st = handle.new_state()
        with handle.stream(st):
            layer(h)
    expected = raw * (tau / torch.linalg.matrix_norm(raw))
    assert torch.allclose(st.layers[1].delta[0], expected, atol=1e-6)


def test_saved_ttt_layers_load_into_a_fresh_model(tmp_path: Path) -> None:
    model = tiny()
    handle = attach(model, TTTConfig(every=2, chunk_size=16))
    randomise(handle)
    handle.save(tmp_path)
    fresh = tiny()
    loaded = load_ttt(fresh, tmp_path)
    assert loaded.cfg == handle.cfg
    x = ids(60)
    assert torch.equal(logits(fresh, x), logits(model, x))
    # the base weights keep their names (LoRA targets and deltas still match)
    names = set(dict(fresh.named_parameters()))
    assert "model.layers.1.mlp.down_proj.weight" in names
    assert "model.layers.1.mlp.ttt_conv.weight" in names
    assert not any(".original." in n for n in fresh.state_dict())
    loaded.detach()
    assert torch.equal(logits(fresh, x), logits(tiny(), x))


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="selects no layer"):
        attach(tiny(), TTTConfig(every=6))
    with pytest.raises(ValueError, match="do not exist"):
        attach(tiny(), TTTConfig(layers=[7]))
    with pytest.raises(ValueError, match="target"):
        TTTConfig(target="labels")
