"""deploy/ as `docker build` and `docker compose` read it, checked without a Docker daemon.

The image was built and run by hand (deploy/README.md says what ran); these keep what that
run fixed from coming back: every package of the wheel is copied into the build, the
context sends none of what the image needs to .dockerignore, and every container that
mounts a molt.toml names it in MOLT_CONFIG (the image sets none, so that a bare
`docker run` starts on the defaults).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def _copied() -> set[str]:
    """What the build stage copies from the context (first arguments of COPY, no --from)."""
    out: set[str] = set()
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            out.update(p.rstrip("/") for p in parts[1:-1])
    return out


def test_the_build_copies_every_package_of_the_wheel() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    includes = project["tool"]["setuptools"]["packages"]["find"]["include"]
    tops = {pattern.rstrip("*") for pattern in includes}
    copied = _copied()
    assert tops <= copied, f"not copied into the image: {sorted(tops - copied)}"
    assert {"requirements.lock", "pyproject.toml", "README.md"} <= copied


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert ".venv" in ignored and ".git" in ignored
    for path in _copied():
        hits = [p for p in ignored if fnmatch.fnmatch(path, p) or path.startswith(p + "/")]
        assert not hits, f"{path} is copied but .dockerignore drops it ({hits})"


def test_the_image_sets_no_config_and_every_mount_names_it() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert not re.search(r"^\s*MOLT_CONFIG=", dockerfile, re.MULTILINE)
    checked: list[str] = []
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        mounts = [v for v in svc.get("volumes", []) if "/etc/molt/molt.toml" in v]
        if mounts:
            assert svc["environment"]["MOLT_CONFIG"] == "/etc/molt/molt.toml", name
            checked.append(f"compose {name}")
    for manifest in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(manifest.read_text()):
            spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []):
                if any(m["mountPath"] == "/etc/molt" for m in c.get("volumeMounts", [])):
                    env = {e["name"]: e.get("value") for e in c.get("env", [])}
                    assert env.get("MOLT_CONFIG") == "/etc/molt/molt.toml", (manifest, c["name"])
                    checked.append(f"{manifest.name} {c['name']}")
    # the proxies and the worker, in compose and in the manifests
    assert len(checked) == 4, checked
