"""`molt bench run`: the toolworld benchmark, arm by arm, into a report folder."""

from __future__ import annotations

from pathlib import Path

import click


def _days(spec: str) -> list[int]:
    """`16` -> 1..16; `3-9` -> 3..9; `1,4,8` -> those days."""
    if "," in spec:
        return [int(x) for x in spec.split(",")]
    if "-" in spec:
        a, b = spec.split("-", 1)
        return list(range(int(a), int(b) + 1))
    return list(range(1, int(spec) + 1))


def register(cli: click.Group) -> None:
    @cli.group()
    def bench() -> None:
        """Benchmarks on toolworld with the tiny policy."""

    @bench.command("run")
    @click.option("--days", default="16", show_default=True, help="N, A-B, or a,b,c.")
    @click.option("--tasks-per-day", default=12, show_default=True)
    @click.option("--arms", default="baseline,oracle", show_default=True)
    @click.option("--seed", default=0, show_default=True)
    @click.option("--out", type=click.Path(path_type=Path), default=Path("bench/reports/latest"),
                  show_default=True)
    @click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
                  help="Policy folder (default: the shipped tiny policy).")
    @click.option("--endpoint", default=None,
                  help="Run the driver against this OpenAI-compatible URL instead of a fresh molt.")
    @click.option("--model", default="tiny", show_default=True)
    @click.option("--errors", type=click.Choice(["toolworld", "pydantic", "jsonschema", "problem-json"]),
                  default="toolworld", show_default=True, help="How the tools say no.")
    @click.option("--complaint-rate", type=click.FloatRange(0.0, 1.0), default=0.6, show_default=True,
                  help="How often the user voices a broken preference (in varied phrasings).")
    def run(days: str, tasks_per_day: int, arms: str, seed: int, out: Path,
            checkpoint: Path | None, endpoint: str | None, model: str, errors: str,
            complaint_rate: float) -> None:
        """Run simulated days for each arm; write report.json, summary.md and plots."""
        from bench.runner import DEFAULT_CHECKPOINT
        from bench.runner import run as run_bench

        run_bench(
            [a.strip() for a in arms.split(",") if a.strip()], days=_days(days),
            tasks_per_day=tasks_per_day, seed=seed, out=out,
            checkpoint=checkpoint or DEFAULT_CHECKPOINT, endpoint=endpoint, model=model,
            errors=errors, complaint_rate=complaint_rate,
        )
        click.echo((out / "summary.md").read_text())
        click.echo(f"report: {out}/ (report.json, summary.md, success.png, step_accuracy.png)")
