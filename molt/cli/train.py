"""`molt train now|status|history|cancel`: the slow loop's jobs.

`now` asks the running server (`POST /admin/train` at the configured address, with
the admin key) so that the job trains where serving and the scheduler live; it then
follows the job with a progress bar (stderr) until its window ends, and prints a
table of steps, reward, KL and the gate's figures. With no server answering it runs
the job in this process, if this molt has a training method wired in. `status`,
`history` and `cancel` read and write the store directly, so they work with or
without a server; a cancelled job that runs elsewhere stops at its holder's next tick.
Every command takes `--json`.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from molt.cli.common import echo_json, settings_from, ts, with_db
from molt.trainer_service import PartsFactory, cancel_job, status_of
from store.database import Database
from store.errors import NotFound
from store.settings import MoltSettings
from store.training import OPEN_STATUSES, TrainingStore
from trainer.schedule import Scheduler

if TYPE_CHECKING:  # imported by the command that calls a server: `molt proxy` never does
    import httpx

WAITING = ("queued", "running")


def _server(settings: MoltSettings) -> tuple[str, dict[str, str]]:
    host = settings.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    key = settings.server.admin_key
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    return f"http://{host}:{settings.server.port}", headers


def _error(r: httpx.Response) -> str:
    try:
        err = r.json().get("error") or {}
    except ValueError:
        return f"HTTP {r.status_code}"
    return str(err.get("message") or f"HTTP {r.status_code}")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def summary_rows(job: dict[str, Any]) -> list[tuple[str, str]]:
    """The final table: what the job did, its figures and the gate's decision."""
    metrics = job.get("metrics") or {}
    gate = job.get("gate") or {}
    rows = [("job", job["id"]), ("tenant", job["tenant"]), ("status", job["status"]),
            ("stopped by", _fmt(job.get("stop_reason"))), ("windows", _fmt(job["windows"])),
            ("steps", _fmt(job["steps"])), ("reward", _fmt(metrics.get("reward"))),
            ("KL", _fmt(metrics.get("kl"))), ("version", _fmt(job.get("version")))]
    if gate:
        promoted = " (promoted)" if gate.get("promoted") else ""
        rows.append(("gate", f"{gate.get('status')}{promoted}"))
        for k, v in gate.items():
            if k not in ("status", "promoted") and isinstance(v, (int, float, str)):
                rows.append((f"  {k}", _fmt(v)))
    if job.get("error"):
        rows.append(("error", str(job["error"])))
    return rows


def echo_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")


class _Progress:
    """A progress bar of a job's steps on stderr (none when stderr is not a terminal)."""

    def __init__(self, total: int, quiet: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="step", file=sys.stderr, leave=False,
                        disable=quiet or not sys.stderr.isatty())

    def update(self, job: dict[str, Any]) -> None:
        self.bar.set_description(str(job["status"]))
        reward = (job.get("metrics") or {}).get("reward")
        if reward is not None:
            self.bar.set_postfix(reward=f"{reward:.3f}")
        self.bar.update(max(0, int(job["steps"]) - self.bar.n))

    def close(self) -> None:
        self.bar.close()


def _follow(client: httpx.Client, job: dict[str, Any], total: int, quiet: bool,
            poll_s: float) -> dict[str, Any]:
    progress = _Progress(total, quiet)
    try:
        while job["status"] in WAITING:
            progress.update(job)
            time.sleep(poll_s)
            r = client.get("/admin/train/status", params={"tenant": job["tenant"],
                                                          "job": job["id"]})
            if r.status_code != 200:
                raise click.ClickException(_error(r))
            job = r.json()["job"]
        progress.update(job)
    finally:
        progress.close()
    return job


def _in_process(settings: MoltSettings, parts: PartsFactory, tenant: str,
                minutes: float | None, steps: int | None) -> dict[str, Any]:
    async def run(db: Database) -> dict[str, Any]:
        cfg = settings.trainer
        store = TrainingStore(db)
        sched = Scheduler(store, parts(settings, db), cfg,
                          jobs_dir=cfg.jobs_dir(settings.data_dir))
        job = await sched.request(tenant, minutes=minutes, steps=steps)
        try:
            while (await store.get(job.id)).status in WAITING:
                await sched.tick()
                await asyncio.sleep(cfg.tick_s)
        finally:
            await sched.shutdown()
        return (await store.get(job.id)).to_dict()

    return with_db(settings, run)


@click.group()
def train() -> None:
    """Training jobs of the slow loop: run one now, follow, list, cancel."""


@train.command("now")
@click.option("--tenant", default="default", show_default=True)
@click.option("--minutes", type=float, default=None, help="This window's budget in minutes.")
@click.option("--steps", type=int, default=None, help="This window's budget in steps.")
@click.option("--no-wait", is_flag=True, help="Start the job and return at once.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def now(ctx: click.Context, tenant: str, minutes: float | None, steps: int | None,
        no_wait: bool, as_json: bool) -> None:
    """Train TENANT now, in a window of --minutes (not paused by traffic)."""
    if minutes is not None and minutes <= 0:
        raise click.BadParameter("must be positive", param_hint="--minutes")
    if steps is not None and steps < 1:
        raise click.BadParameter("must be at least 1", param_hint="--steps")
    settings = settings_from(ctx)
    base, headers = _server(settings)
    body = {"tenant": tenant, "minutes": minutes, "steps": steps}
    import httpx

    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        try:
            r = client.post("/admin/train", json=body)
        except httpx.TransportError:
            r = None
        if r is None:
            from molt.wiring import TRAINER_PARTS as parts

            if parts is None:
                raise click.ClickException(
                    f"no molt server answers at {base}, and this molt has no training method "
                    "wired in to train in-process; start `molt serve`")
            job = _in_process(settings, parts, tenant, minutes, steps)
        else:
            if r.status_code != 202:
                raise click.ClickException(_error(r))
            job = r.json()
            if not no_wait:
                total = steps or job.get("budget_steps") or settings.trainer.budget_steps
                job = _follow(client, job, int(total), as_json, poll_s=0.5)
    if as_json:
        echo_json(job)
    else:
        echo_table(summary_rows(job))
    if job["status"] == "failed":
        sys.exit(1)


@train.command("status")
@click.option("--tenant", default="default", show_default=True)
@click.option("--job", "job_id", default=None, help="A job id (default: the tenant's current).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, tenant: str, job_id: str | None, as_json: bool) -> None:
    """The tenant's unfinished job (else its latest), its events and the lease."""

    async def run(db: Database) -> dict[str, Any]:
        store = TrainingStore(db)
        tid = await store.tenant_id(tenant)
        if tid is None:
            raise NotFound(f"no tenant {tenant!r}")
        return await status_of(store, tid, tenant, time.time(), job_id)

    out = with_db(settings_from(ctx), run)
    if as_json:
        echo_json(out)
        return
    if out["job"] is None:
        click.echo(f"tenant {tenant}: no training jobs yet")
        return
    echo_table(summary_rows(out["job"]))
    lease = out["lease"]
    if lease and lease["live"]:
        click.echo(f"lease: {lease['holder']} until {ts(lease['expires_at'])}")
    for e in out["events"]:
        click.echo(f"  {ts(e['at'])}  {e['kind']:<16} {_detail(e['detail'])}")


def _detail(d: dict[str, Any] | None) -> str:
    if not d:
        return ""
    return ", ".join(f"{k}={_fmt(v)}" for k, v in d.items()
                     if isinstance(v, (int, float, str)) or v is None)


@train.command("history")
@click.option("--tenant", default="default", show_default=True)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def history(ctx: click.Context, tenant: str, limit: int, as_json: bool) -> None:
    """Every job of the tenant, newest first, with what each decided."""

    async def run(db: Database) -> list[dict[str, Any]]:
        store = TrainingStore(db)
        tid = await store.tenant_id(tenant)
        if tid is None:
            return []
        out = []
        for job in await store.jobs(tenant_id=tid, limit=limit):
            d = job.to_dict()
            d["events"] = [e.to_dict() for e in await store.events(job.id)]
            out.append(d)
        return out

    jobs = with_db(settings_from(ctx), run)
    if as_json:
        echo_json(jobs)
        return
    if not jobs:
        click.echo(f"tenant {tenant}: no training jobs yet")
    for j in jobs:
        gate = j.get("gate") or {}
        metrics = j.get("metrics") or {}
        click.echo(f"{ts(j['created_at'])}  {j['id']}  {j['status']:<9} {j['trigger']:<8} "
                   f"steps={j['steps']} reward={_fmt(metrics.get('reward'))} "
                   f"kl={_fmt(metrics.get('kl'))} version={_fmt(j.get('version'))} "
                   f"gate={_fmt(gate.get('status'))}")


@train.command("cancel")
@click.argument("job_id", required=False)
@click.option("--tenant", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cancel(ctx: click.Context, job_id: str | None, tenant: str, as_json: bool) -> None:
    """Cancel JOB_ID, or the tenant's unfinished job; a running one stops at its next step."""

    async def run(db: Database) -> dict[str, Any]:
        store = TrainingStore(db)
        tid = await store.tenant_id(tenant)
        if tid is None:
            raise NotFound(f"no tenant {tenant!r}")
        return (await cancel_job(store, tid, tenant, job_id, time.time())).to_dict()

    job = with_db(settings_from(ctx), run)
    if as_json:
        echo_json(job)
    elif job["status"] in OPEN_STATUSES:
        click.echo(f"{job['id']}: cancel requested; it stops at its next step")
    else:
        click.echo(f"{job['id']}: {job['status']}")


def register(cli: click.Group) -> None:
    cli.add_command(train)
