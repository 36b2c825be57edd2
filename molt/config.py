"""Building the settings tree: defaults < molt.toml < MOLT_* variables < CLI flags."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from store.settings import MoltSettings


class ConfigError(Exception):
    pass


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def config_path(explicit: str | None) -> Path | None:
    """--config, else $MOLT_CONFIG, else ./molt.toml if present."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("MOLT_CONFIG")
    if env:
        return Path(env)
    default = Path("molt.toml")
    return default if default.exists() else None


def load_settings(path: str | None = None, overrides: dict[str, Any] | None = None) -> MoltSettings:
    cfg = config_path(path)
    file_data: dict[str, Any] = {}
    if cfg is not None:
        if not cfg.exists():
            raise ConfigError(f"config file {cfg} does not exist")
        try:
            file_data = tomllib.loads(cfg.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{cfg}: invalid TOML: {exc}") from exc

    class _FromFile(MoltSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # Environment variables win over the file.
            return (env_settings, init_settings)

    try:
        built = _FromFile(**file_data)
        # CLI flags win over both (model_validate reads no environment).
        return MoltSettings.model_validate(_merge(built.model_dump(), overrides or {}))
    except ValidationError as exc:
        where = f" in {cfg}" if cfg else ""
        raise ConfigError(f"invalid settings{where}:\n{_describe(exc)}") from exc


def _describe(exc: ValidationError) -> str:
    """One line per problem, `where: what`, without the offending values (they may be secrets)."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not a setting molt reads)"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)
