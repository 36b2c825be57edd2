"""Checking a registry artifact against the base model it will be applied to.

Everything here reads safetensors *headers* only (8-byte length, then JSON
naming every tensor with its dtype and shape), so a check costs milliseconds
even for a multi-gigabyte base and needs no torch. A failed check raises
`store.errors.InvalidInput` with a message that says what is wrong and where.

The base fingerprint (`base_fingerprint`) hashes config.json, and for every
weight file its name, size, header and three 1 MiB samples of the data
(start, middle, end): a different base (other weights, shapes or config) gets
a different fingerprint without reading gigabytes at every promotion.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from store.errors import InvalidInput

KINDS = ("lora", "ttt_delta", "full")
# The files each kind of artifact must hold.
ARTIFACT_FILES: dict[str, tuple[str, ...]] = {
    "lora": ("adapter_config.json", "adapter_model.safetensors"),
    "ttt_delta": ("delta.safetensors",),
    "full": ("model.safetensors",),
}
_SAMPLE = 1 << 20
_MAX_HEADER = 100 << 20
_LORA_PREFIX = "base_model.model."


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, offsets)."""
    try:
        with path.open("rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise InvalidInput(f"{path}: not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", raw_len)
            if n > _MAX_HEADER:
                raise InvalidInput(f"{path}: not a safetensors file (header of {n} bytes)")
            raw = f.read(n)
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: corrupt safetensors header") from exc
    if not isinstance(header, dict):
        raise InvalidInput(f"{path}: corrupt safetensors header")
    header.pop("__metadata__", None)
    size = path.stat().st_size
    for name, info in header.items():
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list):
            raise InvalidInput(f"{path}: corrupt entry for tensor {name!r}")
        offsets = info.get("data_offsets") or [0, 0]
        if 8 + n + int(offsets[1]) > size:
            raise InvalidInput(f"{path}: truncated (tensor {name!r} runs past the end of the file)")
    return header


def _weight_files(base_dir: Path) -> list[Path]:
    files = sorted(base_dir.glob("*.safetensors"))
    if not files:
        raise InvalidInput(f"base model {base_dir} has no *.safetensors weights")
    return files


def base_shapes(base_dir: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor of a base model folder, by name, with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for f in _weight_files(base_dir):
        for name, info in read_header(f).items():
            shapes[name] = tuple(int(d) for d in info["shape"])
    return shapes


def _samples(path: Path, size: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        for at in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
            f.seek(at)
            yield f.read(_SAMPLE)


def base_fingerprint(base_dir: str | Path) -> str:
    """A short stable hash identifying a base model folder (see the module doc)."""
    base = Path(base_dir)
    h = hashlib.sha256()
    config = base / "config.json"
    if not config.is_file():
        raise InvalidInput(f"base model {base} has no config.json")
    h.update(config.read_bytes())
    try:
        for f in _weight_files(base):
            size = f.stat().st_size
            h.update(f.name.encode() + b"\0" + str(size).encode())
            for sample in _samples(f, size):
                h.update(sample)
    except OSError as exc:
        raise InvalidInput(f"base model {base}: cannot be read ({exc.strerror or exc})") from exc
    return "fp-" + h.hexdigest()[:24]


def _base_name(lora_key: str) -> tuple[str, str] | None:
    """`base_model.model.X.lora_A.weight` -> ("X.weight", "A")."""
    for part in ("A", "B"):
        marker = f".lora_{part}.weight"
        if lora_key.endswith(marker):
            inner = lora_key[: -len(marker)]
            inner = inner.removeprefix(_LORA_PREFIX)
            return inner + ".weight", part
    return None


def _lookup(shapes: dict[str, tuple[int, ...]], name: str) -> tuple[int, ...] | None:
    if name in shapes:
        return shapes[name]
    # Tied embeddings: lm_head is stored as the input embedding.
    if name == "lm_head.weight":
        return shapes.get("model.embed_tokens.weight")
    return None


def check_lora(art: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    try:
        cfg = json.loads((art / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{art}/adapter_config.json is not valid JSON") from exc
    if not isinstance(cfg, dict) or str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise InvalidInput(f"{art}/adapter_config.json does not describe a LoRA adapter")
    rank = int(cfg.get("r", 0))
    header = read_header(art / "adapter_model.safetensors")
    seen = 0
    for key, info in header.items():
        parsed = _base_name(key)
        if parsed is None:
            continue
        seen += 1
        name, part = parsed
        shape = tuple(int(d) for d in info["shape"])
        want = _lookup(shapes, name)
        if want is None:
            raise InvalidInput(f"adapter tensor {key!r} targets {name!r}, which the base model lacks")
        if len(shape) != 2 or len(want) != 2:
            raise InvalidInput(f"adapter tensor {key!r} has shape {list(shape)}; expected a matrix")
        ok = (shape[1] == want[1]) if part == "A" else (shape[0] == want[0])
        if rank and (shape[0] if part == "A" else shape[1]) != rank:
            ok = False
        if not ok:
            raise InvalidInput(
                f"adapter tensor {key!r} has shape {list(shape)}, which does not fit base "
                f"weight {name!r} of shape {list(want)} (rank {rank})"
            )
    if not seen:
        raise InvalidInput(f"{art}/adapter_model.safetensors holds no LoRA tensors")


def check_same_shapes(path: Path, shapes: dict[str, tuple[int, ...]], what: str) -> None:
    header = read_header(path)
    if not header:
        raise InvalidInput(f"{path} holds no tensors")
    for key, info in header.items():
        shape = tuple(int(d) for d in info["shape"])
        want = _lookup(shapes, key)
        if want is None:
            raise InvalidInput(f"{what} tensor {key!r} is not a weight of the base model")
        if want != shape:
            raise InvalidInput(
                f"{what} tensor {key!r} has shape {list(shape)}; the base weight has {list(want)}"
            )


def check_artifact(
    art: Path, kind: str, base_dir: Path | None, expected_base_hash: str | None
) -> None:
    """Refuse an artifact that is incomplete, corrupt, or made for another base.

    `base_dir` is the base model as served here (None when the weights live
    elsewhere, e.g. behind a vLLM server: then only the artifact itself is checked).
    """
    if kind not in KINDS:
        raise InvalidInput(f"unknown artifact kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not art.is_dir():
        raise InvalidInput(f"artifact folder {art} is missing")
    for name in ARTIFACT_FILES[kind]:
        if not (art / name).is_file():
            raise InvalidInput(f"{kind} artifact {art} is missing {name}")
    if base_dir is None:
        for name in ARTIFACT_FILES[kind]:
            if name.endswith(".safetensors"):
                read_header(art / name)
        return
    actual = base_fingerprint(base_dir)
    if expected_base_hash and expected_base_hash != actual:
        raise InvalidInput(
            f"artifact {art} was made for base {expected_base_hash}, but the served base "
            f"{base_dir} is {actual} (wrong base model)"
        )
    shapes = base_shapes(base_dir)
    if kind == "lora":
        check_lora(art, shapes)
    elif kind == "ttt_delta":
        check_same_shapes(art / "delta.safetensors", shapes, "delta")
    else:
        check_same_shapes(art / "model.safetensors", shapes, "weight")
