"""Training the TTT layers of the tiny policy, and the overnight in-place update (real steps, CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from modeling.loading import load_base
from modeling.ttt import TTTMLP, load_version
from modeling.ttt_config import TTTConfig
from store.registry import Registry
from tests.trainer.conftest import POLICY
from trainer.ttt import (
    DELTA_FILE,
    build,
    overnight_update,
    register,
    session_tokens,
    stream_sessions,
    train_ttt,
)
from trainer.ttt_config import TTTTrainConfig
from trainer.types import Step

TENANT, BASE = "ten_a", "tiny"


def session(i: int, turns: int = 6) -> Step:
    """A long recorded session: the user keeps restating a convention, the agent follows it."""
    messages: list[dict[str, Any]] = []
    for k in range(turns):
        messages.append({"role": "user", "content": f"Session {i}, request {k}: dates are written "
                         f"day-first here, like 0{k + 1}/03/2026, and amounts carry two decimals."})
        messages.append({"role": "assistant", "content": f"Noted: 0{k + 1}/03/2026, 12.50."})
    messages.append({"role": "user", "content": "And the last one?"})
    return Step(turn_id=f"turn_{i}", session_id=f"ses_{i}", tenant_id=TENANT, idx=turns,
                created_at=float(i), model="tiny", messages=messages, tools=None,
                completion={"role": "assistant", "content": "09/03/2026, 40.00."})


@pytest.fixture(scope="module")
def sequences() -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(POLICY), local_files_only=True)
    seqs = session_tokens([session(i) for i in range(4)], tok)
    assert len(seqs) == 4 and all(len(s) > 150 for s in seqs)
    return seqs


def cfg(**kw: Any) -> TTTTrainConfig:
    ttt = TTTConfig(every=2, chunk_size=32, eta=3.0, tau=kw.pop("tau", 1.0))
    return TTTTrainConfig(ttt=ttt, max_steps=kw.pop("max_steps", 3), learning_rate=1e-2,
                          seq_len=256, **kw)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    after = snapshot(model)
    assert set(after) == set(before)
    return {n for n in before if not torch.equal(before[n], after[n])}


def test_real_steps_change_conv_and_w_target_and_nothing_frozen(
        tmp_path: Path, sequences: list[list[int]]) -> None:
    c = cfg()
    tm = build(POLICY, c)
    assert sorted(tm.ttt.modules) == [1, 3]
    before = snapshot(tm.model)
    ttt_names = {n for n in before if ".ttt_" in n}
    assert len(ttt_names) == 4
    # the same loop train_ttt runs, on the model build() made
    from trainer.ttt import _batch

    params = [p for p in tm.model.parameters() if p.requires_grad]
    assert {n for n, p in tm.model.named_parameters() if p.requires_grad} == ttt_names
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    tm.model.train()
    for step in range(3):
        loss = tm.model(**_batch([sequences[step][:256]], 0, torch.device("cpu"))).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert changed(before, tm.model) == ttt_names

    result = train_ttt(sequences[:3], sequences[3:], POLICY, tmp_path / "art", c)
    assert result.steps == 3 and not result.stopped_early
    assert set(result.trainable) == ttt_names
    assert result.heldout_loss_ttt is not None and result.heldout_loss_without is not None
    assert result.heldout_loss_ttt != result.heldout_loss_without
    art = tmp_path / "art"
    for name in ("delta.safetensors", "ttt.safetensors", "ttt_config.json",
                 "ttt_train_config.json", "train_log.json"):
        assert (art / name).is_file(), name
    delta = load_file(str(art / DELTA_FILE))
    assert set(delta) == {"model.layers.1.mlp.down_proj.weight", "model.layers.3.mlp.down_proj.weight"}
    assert all(not v.any() for v in delta.values())
    reg = Registry(tmp_path / "registry")
    meta = register(reg, TENANT, BASE, art, POLICY, c, result.metrics())
    assert meta.kind == "ttt_delta" and meta.status == "candidate"
    reg.validate(TENANT, BASE, meta.version, POLICY)


def test_a_lora_trains_with_the_ttt_layers_and_merges_into_the_delta(
        tmp_path: Path, sequences: list[list[int]]) -> None:
    c = cfg(lora=True, max_steps=3)
    result = train_ttt(sequences[:3], sequences[3:], POLICY, tmp_path / "art", c)
    names = set(result.trainable)
    assert any("lora_" in n for n in names) and sum(".ttt_" in n for n in names) == 4
    assert all("lora_" in n or ".ttt_" in n for n in names)
    delta = load_file(str(tmp_path / "art" / DELTA_FILE))
    assert "model.layers.0.self_attn.q_proj.weight" in delta
    assert any(v.abs().sum() > 0 for k, v in delta.items() if "q_proj" in k)
    Registry(tmp_path / "reg").validate(
        TENANT, BASE, register(Registry(tmp_path / "reg"), TENANT, BASE, tmp_path / "art",
                               POLICY, c, result.metrics()).version, POLICY)
    # the version loads: base + merged LoRA + trained TTT layers; its conv is not zero
    model, handle = load_version(load_base(POLICY), tmp_path / "art")
    assert all(m.ttt_conv.weight.abs().sum() > 0 for m in handle.modules.values())
    x = torch.tensor([sequences[3][:100]])
    with torch.no_grad():
        served = model(input_ids=x).logits
    plain = load_base(POLICY).model
    with torch.no_grad():
        assert not torch.allclose(served, plain(input_ids=x).logits, atol=1e-4)


def _by_hand(layer: TTTMLP, xs: list[torch.Tensor], chunk: int, tau: float) -> torch.Tensor:
    """Sum over the session's chunks of clip(eta V^T Z), from the layer's recorded inputs."""
    x = torch.cat(xs, dim=0)  # (T, hidden), one session
    w = layer.ttt_conv.weight
    total = torch.zeros_like(layer.down_proj.weight)
    for s in range(0, x.shape[0], chunk):
        h = x[s:s + chunk]
        z = layer.act_fn(layer.gate_proj(h)) * layer.up_proj(h)
        conv = F.conv1d(h.T[None], w, padding=2, groups=w.shape[0])[0].T  # within the chunk
        v = conv @ layer.ttt_target.weight.T
        dw = layer.cfg.eta * v.T @ z
        total += dw * min(1.0, tau / float(torch.linalg.matrix_norm(dw)))
    return total


def _trained_version(tmp_path: Path, sequences: list[list[int]],
                     c: TTTTrainConfig) -> tuple[Registry, str]:
    trained = train_ttt(sequences[:2], [], POLICY, tmp_path / "v1", c)
    reg = Registry(tmp_path / "registry")
    v1 = register(reg, TENANT, BASE, tmp_path / "v1", POLICY, c, trained.metrics())
    reg.promote(TENANT, BASE, v1.version, base_dir=POLICY)
    return reg, v1.version


def _updates_by_hand(version_dir: Path, night: list[list[int]], c: TTTTrainConfig, *,
                     carry: bool) -> list[dict[int, torch.Tensor]]:
    """Each session's sum of clipped per-chunk updates, recomputed by hand from every TTT
    layer's inputs in a second pass over the sessions; the fast weights carry from one
    session to the next (`carry`) or each session starts from the version's W_down."""
    model, handle = load_version(load_base(POLICY), version_dir)
    seen: dict[int, list[torch.Tensor]] = {i: [] for i in handle.modules}
    hooks = [m.register_forward_hook(lambda mod, args, out, i=i: seen[i].append(args[0][0].detach()))
             for i, m in handle.modules.items()]
    per_session = []
    state = handle.new_state()
    for seq in night:
        if not carry:
            state = handle.new_state()
        for xs in seen.values():
            xs.clear()
        stream_sessions(model, handle, state, [seq], c.seq_len)
        with torch.no_grad():
            per_session.append({i: _by_hand(m, seen[i], c.ttt.chunk_size, c.ttt.tau or 0.0)
                                for i, m in handle.modules.items()})
    for h in hooks:
        h.remove()
    return per_session


def _served_diff(reg: Registry, version: str) -> dict[str, torch.Tensor]:
    """W_down of a served version minus the base model's, for every layer that differs; and
    nothing but W_down differs."""
    new_model, _ = load_version(load_base(POLICY), reg.path(TENANT, BASE, version))
    plain = dict(load_base(POLICY).model.named_parameters())
    served = dict(new_model.named_parameters())
    assert all(torch.equal(served[n], plain[n]) for n in plain if "down_proj" not in n)
    return {n: (served[n] - plain[n]).detach() for n in plain if "down_proj" in n}


def test_overnight_update_writes_a_delta_version_of_the_accumulated_clipped_updates(
        tmp_path: Path, sequences: list[list[int]]) -> None:
    tau = 0.5
    c = cfg(tau=tau, overnight="stream", max_delta_ratio=None)
    reg, v1 = _trained_version(tmp_path, sequences, c)

    night = sequences[1:]
    res = overnight_update(night, POLICY, reg.path(TENANT, BASE, v1), tmp_path / "v2", c)
    assert res.metrics["sessions"] == 3 and res.metrics["tokens"] == sum(len(s) for s in night)
    for fig in res.metrics["layers"].values():
        assert fig["updates"] > 0 and fig["max_update_norm"] <= tau * (1 + 1e-5)
        assert not fig["bounded"]
    assert any(fig["clipped"] > 0 for fig in res.metrics["layers"].values())
    v2 = register(reg, TENANT, BASE, res.artifact_dir, POLICY, c, res.metrics,
                  data_window={"sessions": 3})
    assert v2.parent == v1 and v2.kind == "ttt_delta"
    reg.validate(TENANT, BASE, v2.version, POLICY)

    # one stream: W_down(v2) - W_down(base) is the sum of every session's clipped updates
    per_session = _updates_by_hand(reg.path(TENANT, BASE, v1), night, c, carry=True)
    diff = _served_diff(reg, v2.version)
    for i in per_session[0]:
        d = diff[f"model.layers.{i}.mlp.down_proj.weight"]
        expected = sum(s[i] for s in per_session)
        assert d.abs().sum() > 0
        assert torch.allclose(d, expected, atol=1e-5), (d - expected).abs().max()

    # it is served, and rolls back, like any other version
    reg.promote(TENANT, BASE, v2.version, base_dir=POLICY)
    assert reg.active(TENANT, BASE) == v2.version
    back = reg.rollback(TENANT, BASE, base_dir=POLICY, reason="test")
    assert back.active == v1 and reg.get(TENANT, BASE, v2.version).status == "rolled_back"


def test_by_default_the_overnight_delta_is_the_mean_of_what_each_session_taught(
        tmp_path: Path, sequences: list[list[int]]) -> None:
    c = cfg(tau=0.5)
    assert c.overnight == "session_mean"
    reg, v1 = _trained_version(tmp_path, sequences, c)
    night = sequences[1:]
    per_session = _updates_by_hand(reg.path(TENANT, BASE, v1), night, c, carry=False)

    # no bound in the way: the delta is the mean of the sessions' own updates, each session
    # streamed from the version's W_down as serving starts one
    loose = cfg(tau=0.5, max_delta_ratio=None)
    res = overnight_update(night, POLICY, reg.path(TENANT, BASE, v1), tmp_path / "v2", loose)
    v2 = register(reg, TENANT, BASE, res.artifact_dir, POLICY, loose, res.metrics)
    diff = _served_diff(reg, v2.version)
    for i in per_session[0]:
        d = diff[f"model.layers.{i}.mlp.down_proj.weight"]
        expected = sum(s[i] for s in per_session) / len(night)
        assert d.abs().sum() > 0
        assert torch.allclose(d, expected, atol=1e-5), (d - expected).abs().max()
        fig = res.metrics["layers"][str(i)]
        norms = [float(torch.linalg.matrix_norm(s[i])) for s in per_session]
        assert fig["session_norm_max"] == pytest.approx(max(norms), rel=1e-4)
        assert fig["delta_norm"] <= fig["session_norm_max"] * (1 + 1e-5)  # mean, not sum

    # twice the sessions (the same ones again) leave the same delta: it does not grow
    # with the day's traffic; a one-token session streams nothing and does not dilute it
    twice = overnight_update([*night * 2, [night[0][0]]], POLICY, reg.path(TENANT, BASE, v1),
                             tmp_path / "v3", loose)
    assert twice.metrics["sessions"] == 2 * len(night)
    for i, fig in twice.metrics["layers"].items():
        assert fig["delta_norm"] == pytest.approx(res.metrics["layers"][i]["delta_norm"], rel=1e-4)

    # the bound: each layer's added delta is at most max_delta_ratio * ||W_down||_F
    ratio = 0.5 * min(f["delta_norm"] / f["w_down_norm"] for f in res.metrics["layers"].values())
    tight = cfg(tau=0.5, max_delta_ratio=ratio)
    capped = overnight_update(night, POLICY, reg.path(TENANT, BASE, v1), tmp_path / "v4", tight)
    v4 = register(reg, TENANT, BASE, capped.artifact_dir, POLICY, tight, capped.metrics)
    diff4 = _served_diff(reg, v4.version)
    for i, fig in capped.metrics["layers"].items():
        assert fig["bounded"]
        assert fig["delta_norm"] == pytest.approx(ratio * fig["w_down_norm"], rel=1e-4)
        d = diff4[f"model.layers.{i}.mlp.down_proj.weight"]
        full = diff[f"model.layers.{i}.mlp.down_proj.weight"]
        # the same direction, shorter
        assert torch.allclose(d, full * (fig["delta_norm"] / fig["accumulated_norm"]), atol=1e-5)


def test_the_overnight_update_needs_trained_ttt_layers(tmp_path: Path,
                                                      sequences: list[list[int]]) -> None:
    from trainer.errors import NotEnoughData

    (tmp_path / "lora").mkdir()
    with pytest.raises(NotEnoughData, match="no trained TTT layers"):
        overnight_update(sequences, POLICY, tmp_path / "lora", tmp_path / "out", cfg())


def test_the_scheduler_body_trains_pauses_resumes_then_updates_overnight(tmp_path: Path) -> None:
    from trainer.jobs import TrainRun
    from trainer.ttt import UPDATE_FILE, TTTBody
    from trainer.types import Split

    split = Split(train=[session(i) for i in range(3)], heldout=[session(9)])
    active: dict[str, Path] = {}
    body = TTTBody(POLICY, cfg(max_steps=4), lambda tenant: active.get(tenant))

    def run(**kw: Any) -> TrainRun:
        return TrainRun(job_id="job_1", tenant=TENANT, work_dir=tmp_path,
                        checkpoint_dir=tmp_path / "checkpoints", **kw)

    first = body(split, run(resume_from=None, steps_done=0, stop_at_step=2))
    assert not first.finished and first.steps == 2 and first.artifact is None
    assert first.checkpoint is not None and (first.checkpoint / "ttt.safetensors").is_file()
    second = body(split, run(resume_from=first.checkpoint, steps_done=2, stop_at_step=None))
    assert second.finished and second.steps == 4 and second.kind == "ttt_delta"
    assert second.artifact is not None and second.config["mode"] == "train"
    reg = Registry(tmp_path / "registry")
    v1 = register(reg, TENANT, BASE, second.artifact, POLICY, cfg(), second.metrics)
    reg.promote(TENANT, BASE, v1.version, base_dir=POLICY)

    active[TENANT] = reg.path(TENANT, BASE, v1.version)
    night = body(split, run(resume_from=None, steps_done=0, stop_at_step=None))
    assert night.finished and night.config["mode"] == "overnight_update"
    assert night.artifact is not None and (night.artifact / UPDATE_FILE).is_file()
    assert night.metrics["sessions"] == 3
    v2 = register(reg, TENANT, BASE, night.artifact, POLICY, cfg(), night.metrics)
    reg.validate(TENANT, BASE, v2.version, POLICY)


def test_train_labels_put_the_loss_on_the_labelled_tokens_only(
        tmp_path: Path, sequences: list[list[int]]) -> None:
    from trainer.errors import NotEnoughData
    from trainer.ttt import IGNORE

    c = cfg(max_steps=1)
    # the first step's loss is the untrained model's loss on the labelled tokens: with only
    # the second half of each window labelled it is that half's loss, not the window's
    half = [[IGNORE] * 128 + s[128:256] for s in sequences[:1]]
    first = [s[:256] for s in sequences[:1]]
    tm = build(POLICY, c)
    with torch.no_grad():
        logits = tm.model(input_ids=torch.tensor(first)).logits[0]
    want = F.cross_entropy(logits[128 - 1:255], torch.tensor(first[0][128:256])).item()
    got = train_ttt(first, sequences[3:], POLICY, tmp_path / "a", c, train_labels=half)
    assert got.loss_first == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="match the train sequences"):
        train_ttt(first, [], POLICY, tmp_path / "b", c, train_labels=[[IGNORE] * 3])
    with pytest.raises(NotEnoughData, match="labelled"):  # nothing labelled: nothing to train
        train_ttt(first, [], POLICY, tmp_path / "c", c, train_labels=[[IGNORE] * 256])
