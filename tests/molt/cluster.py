"""Real molt processes on loopback for the scale-out tests (issue 18).

`Procs` starts `python -m molt --config <name>.toml <role> ...` processes (one
molt.toml each, written by the caller's `config(name)`), waits on each one's
own `/healthz`, and stops them. `chroma_server` runs a real Chroma server
(`chroma run`, from the installed chromadb).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.fakes.server import free_port

ROOT = Path(__file__).resolve().parents[2]
# torch, the tiny policy and the embedding model load in each process, on shared cores
START_TIMEOUT_S = 300


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


class Procs:
    def __init__(self, tmp: Path, config: Callable[[str], str]) -> None:
        self.tmp = tmp
        self.config = config  # process name -> its molt.toml text
        self.running: list[Proc] = []

    def config_path(self, name: str) -> Path:
        cfg = self.tmp / f"{name}.toml"
        cfg.write_text(self.config(name))
        return cfg

    @staticmethod
    def _env() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOLT_")}
        env["PYTHONPATH"] = str(ROOT)
        # several processes share the machine's cores: one torch thread each, not one per core
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def launch(self, name: str, *args: str) -> Proc:
        """Start one process; it is not up yet (see `wait_up`)."""
        port = free_port()
        env = self._env()
        log = self.tmp / f"{name}.log"
        with open(log, "ab") as f:  # the child keeps its own copy
            popen = subprocess.Popen(
                [sys.executable, "-m", "molt", "--config", str(self.config_path(name)), *args,
                 "--port", str(port), "--log-level", "warning"],
                env=env, stdout=subprocess.DEVNULL, stderr=f)
        proc = Proc(name, popen, f"http://127.0.0.1:{port}", log)
        self.running.append(proc)
        return proc

    def wait_up(self, *procs: Proc) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        for proc in procs:
            last = "no answer"
            while True:  # wait on the process's own /healthz
                assert proc.popen.poll() is None, f"{proc.name} exited:\n{proc.log_text()}"
                try:
                    r = httpx.get(f"{proc.url}/healthz", timeout=5)
                    if r.status_code == 200:
                        break
                    last = f"{r.status_code} {r.text[:300]}"
                except httpx.TransportError as exc:
                    last = repr(exc)
                assert time.monotonic() < deadline, (
                    f"{proc.name} did not come up (/healthz: {last}):\n{proc.log_text()}")
                time.sleep(0.2)

    def start(self, name: str, *args: str) -> Proc:
        proc = self.launch(name, *args)
        self.wait_up(proc)
        return proc

    def cli(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """A `molt` command with process `name`'s settings, as an operator would run it."""
        return subprocess.run([sys.executable, "-m", "molt", "--config", str(self.config_path(name)),
                               *args], env=self._env(), capture_output=True, text=True,
                              timeout=START_TIMEOUT_S, check=False)

    def stop_all(self) -> None:
        for p in reversed(self.running):
            if p.popen.poll() is None:
                p.popen.terminate()
                try:
                    p.popen.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.popen.kill()
                    p.popen.wait(timeout=30)


@contextlib.contextmanager
def chroma_server(path: Path) -> Iterator[str]:
    """A real Chroma server (`chroma run`) on loopback; yields its URL."""
    port = free_port()
    chroma = Path(sys.executable).with_name("chroma")
    # the installed `chroma` script, run by this interpreter (whatever its shebang says)
    proc = subprocess.Popen([sys.executable, str(chroma), "run", "--path", str(path),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:  # wait on the server's own heartbeat
            assert proc.poll() is None, "chroma run exited"
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "chroma run did not come up"
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def policy_config(tmp: Path, *, store_url: str, chroma_url: str, registry: str,
                  policy: Path) -> Callable[[str], str]:
    """One molt.toml for every process of a scaled-out molt; only `data_dir` differs.

    The tiny policy served locally by each proxy, PostgreSQL, the Chroma server, the
    registry at one URL (fsspec), the spool on; skills and the evolver on (the evolver
    loop runs only in `molt worker`), tuned for a short test: no seed skills, fast polls,
    an evolution after 4 failure cases (or 30 s), no context optimisation.
    """
    def config(name: str) -> str:
        return f"""data_dir = "{tmp / name}"
registry_dir = "{registry}"
[store]
url = "{store_url}"
[recorder]
spool = true
[skills]
enabled = true
seed_dir = "{tmp / 'no-seed-skills'}"
chroma_url = "{chroma_url}"
poll_interval_s = 0.2
token_budget = 300
[evolver]
enabled = true
min_support = 2
optimize_context = false
poll_s = 1
trigger_failures = 4
interval_s = 30
[trainer]
enabled = false
[[models]]
alias = "tiny"
local = "{policy}"
"""
    return config


def start_replicas(procs: Procs, meanwhile: Callable[[], object] = lambda: None
                   ) -> tuple[Proc, Proc, Proc]:
    """Proxies `a` and `b` and a worker replaying through `a`, started side by side
    (`meanwhile` runs while they come up)."""
    a = procs.launch("a", "proxy")
    b = procs.launch("b", "proxy")
    w = procs.launch("w", "worker", "--replay-url", f"{a.url}/v1")
    meanwhile()
    procs.wait_up(a, b, w)
    return a, b, w
