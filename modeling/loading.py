"""Loading a base model and registry versions from local folders (never the hub).

- `load_base`: `AutoModelForCausalLM` + `AutoTokenizer` from a folder.
- LoRA versions share the base: `LoraHost` wraps it once in a `PeftModel` and
  attaches each adapter under its own name; every forward pass names its
  adapter (None for the base weights), so attaching or detaching one version
  never changes what another request is computed with. All forwards run on
  one thread, one request at a time, so the host activates the named adapter
  only when it differs from the previous call's (peft's per-row
  `adapter_names` path re-registers hooks on every LoRA layer at every call,
  which cost 60% of the throughput of a small model).
  Reading an adapter's files (`read_lora`) is separate from attaching it, so
  the slow part can run while the model keeps serving.
- Or, for small models, a LoRA version is merged into its own copy of the
  base (`load_merged_lora`): built entirely off the serving thread, and as
  fast as the base at generation time.
- Weight deltas (`ttt_delta`: W + dW) and full weights get their own model
  object, loaded fresh from the base folder.

- `forward_step`: one forward pass with a KV cache, in the current
  transformers API (a `Cache` object passed as `cache=`, returned as
  `output.cache`; the old `past_key_values` keyword is deprecated in 5.x).

peft, transformers and safetensors errors are translated here into
`LoadError` (a ValueError) with a message that names the folder.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

BASE_ADAPTER = "__base__"


class LoadError(ValueError):
    """A model, tokenizer or artifact that cannot be loaded."""


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft 0.21 calls transformers' deprecated `is_gradient_checkpointing` (a FutureWarning
    that is not ours to fix); silence that one warning and nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*",
                                category=FutureWarning)
        yield


@dataclass(slots=True)
class LoadedBase:
    path: Path
    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    if name in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        dtype = getattr(torch, str(name))
    except AttributeError as exc:
        raise LoadError(f"unknown dtype {name!r}") from exc
    if not isinstance(dtype, torch.dtype):
        raise LoadError(f"unknown dtype {name!r}")
    return dtype


def _from_pretrained(path: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype=dtype
        )
    except (OSError, ValueError, KeyError) as exc:
        raise LoadError(f"cannot load a causal LM from {path}: {exc}") from exc
    return model.to(device).eval()


def load_base(path: str | Path, *, device: str = "cpu", dtype: str | None = None) -> LoadedBase:
    from transformers import AutoTokenizer

    p = Path(path)
    if not (p / "config.json").is_file():
        raise LoadError(f"{p} is not a model folder (no config.json)")
    dev = torch.device(device)
    dt = resolve_dtype(dtype, dev)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise LoadError(f"cannot load the tokenizer from {p}: {exc}") from exc
    return LoadedBase(p, _from_pretrained(p, dev, dt), tokenizer, dev, dt)


def eos_ids(base: LoadedBase) -> set[int]:
    """Token ids that end generation: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    if base.tokenizer.eos_token_id is not None:
        ids.add(int(base.tokenizer.eos_token_id))
    gen = getattr(base.model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    return ids


def new_cache(model: Any) -> Any:
    """An empty KV cache for one sequence of `model` (grows as tokens are added)."""
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def forward_step(model: Any, input_ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
    """One forward pass that extends `cache` (None: a new one); (logits, the cache)."""
    if cache is None:
        cache = new_cache(model)
    out = model(input_ids=input_ids, cache=cache, use_cache=True)
    return out.logits, out.cache


# -- LoRA -------------------------------------------------------------------

@dataclass(slots=True)
class LoraFiles:
    config: Any  # peft.LoraConfig
    state: dict[str, torch.Tensor]


def read_lora(path: str | Path, device: torch.device) -> LoraFiles:
    """Read an adapter's config and tensors (file I/O only; any thread)."""
    from peft import LoraConfig
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    try:
        config = LoraConfig.from_pretrained(str(p))
        state = load_file(str(p / "adapter_model.safetensors"), device=str(device))
    except (OSError, ValueError, TypeError, SafetensorError) as exc:
        raise LoadError(f"cannot read the LoRA adapter in {p}: {exc}") from exc
    config.inference_mode = True
    return LoraFiles(config, state)


class LoraHost:
    """The base model wrapped once by peft, holding any number of named adapters."""

    def __init__(self, base: LoadedBase) -> None:
        self.base = base
        self.peft: Any = None
        self.names: set[str] = set()
        # The adapter the layers currently apply (BASE_ADAPTER: disabled); None: unknown.
        self._current: str | None = None

    def attach(self, name: str, files: LoraFiles) -> None:
        from peft import PeftModel
        from peft.utils import set_peft_model_state_dict

        try:
            with _quiet_peft():
                if self.peft is None:
                    self.peft = PeftModel(self.base.model, files.config, adapter_name=name)
                else:
                    self.peft.add_adapter(name, files.config)
                result = set_peft_model_state_dict(self.peft, files.state, adapter_name=name)
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            self._drop(name)
            raise LoadError(f"LoRA adapter {name} does not fit the base model: {exc}") from exc
        missing = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
        if missing:
            self._drop(name)
            raise LoadError(f"LoRA adapter {name} has tensors the model lacks: {missing[:3]}")
        self.peft.to(self.base.device, dtype=self.base.dtype)
        self.peft.eval()
        self.names.add(name)
        self._current = None
        for zombie in [n for n in self.peft.peft_config if n not in self.names]:
            self.peft.delete_adapter(zombie)

    def _drop(self, name: str) -> None:
        if self.peft is not None and name in self.peft.peft_config:
            self.detach(name)

    def detach(self, name: str) -> None:
        if self.peft is None:
            return
        self._current = None
        if len(self.peft.peft_config) > 1:
            self.peft.delete_adapter(name)
        else:
            # peft keeps at least one adapter: zero this one instead (no row
            # selects it any more) and delete it at the next attach.
            self._zero(name)
        self.names.discard(name)

    def _zero(self, name: str) -> None:
        with torch.no_grad():
            for n, p in self.peft.named_parameters():
                if f".{name}." in n and "lora_B" in n:
                    p.zero_()

    def model_for(self, adapter: str | None) -> Any:
        """The model object to run with `adapter` applied (None: none), made current."""
        if self.peft is None:
            return self.base.model
        want = adapter or BASE_ADAPTER
        if want != self._current:
            tuner = self.peft.base_model
            if want == BASE_ADAPTER:
                tuner.disable_adapter_layers()
            else:
                if want not in self.names:
                    raise LoadError(f"LoRA adapter {want} is not attached")
                tuner.enable_adapter_layers()
                tuner.set_adapter(want, inference_mode=True)
            self._current = want
        return self.peft.get_base_model()


def load_merged_lora(base: LoadedBase, path: str | Path) -> Any:
    """A new model object with the adapter merged into a fresh copy of the base weights."""
    from peft import PeftModel

    p = Path(path)
    model = _from_pretrained(base.path, base.device, base.dtype)
    try:
        with _quiet_peft():
            merged = PeftModel.from_pretrained(model, str(p)).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise LoadError(f"LoRA adapter in {p} does not fit the base model: {exc}") from exc
    return merged.eval()


def parameter_count(base: LoadedBase) -> int:
    return sum(int(p.numel()) for p in base.model.parameters())


# -- weight deltas and full weights ------------------------------------------

def load_with_delta(base: LoadedBase, path: str | Path) -> Any:
    """A new model object: the base weights plus `delta.safetensors` (W + dW)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    try:
        delta = load_file(str(p / "delta.safetensors"))
    except (OSError, SafetensorError) as exc:
        raise LoadError(f"cannot read the weight delta in {p}: {exc}") from exc
    model = _from_pretrained(base.path, base.device, base.dtype)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, d in delta.items():
            if name not in params or params[name].shape != d.shape:
                raise LoadError(f"delta tensor {name!r} does not match a base weight")
            params[name].add_(d.to(params[name].device, params[name].dtype))
    return model


def load_full(base: LoadedBase, path: str | Path) -> Any:
    """A new model object with all weights from `model.safetensors` (same architecture)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    model = _from_pretrained(base.path, base.device, base.dtype)
    try:
        state = load_file(str(p / "model.safetensors"), device=str(base.device))
        model.load_state_dict(state, strict=False)
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise LoadError(f"cannot load the weights in {p}: {exc}") from exc
    return model.eval()
