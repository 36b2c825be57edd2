"""`molt feedback SESSION_OR_TURN --score S --text T`."""

from __future__ import annotations

import click

from molt.cli.common import echo_json, settings_from, with_db
from store.database import Database
from store.errors import NotFound
from store.feedback import FeedbackStore
from store.records import FeedbackRecord
from store.trajectories import TrajectoryStore


def register(cli: click.Group) -> None:
    @cli.command("feedback")
    @click.argument("target")
    @click.option("--score", type=click.FloatRange(-1.0, 1.0), default=None)
    @click.option("--text", default=None)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def feedback(ctx: click.Context, target: str, score: float | None, text: str | None, as_json: bool) -> None:
        """Give a score in [-1, 1] and/or a text to a session or a turn."""
        if score is None and not text:
            raise click.UsageError("give --score, --text, or both")

        async def run(db: Database) -> FeedbackRecord:
            ts = TrajectoryStore(db)
            try:
                turn = await ts.get_turn(target)
                tenant, session_id, turn_id = turn["tenant_id"], turn["session_id"], target
            except NotFound:
                d = await ts.get_session(target)
                turn_id, session_id = None, d.summary.id
                tenant = d.turns[0]["tenant_id"] if d.turns else d.summary.tenant
            return await FeedbackStore(db).add(
                tenant_id=tenant, session_id=session_id, turn_id=turn_id, score=score, text=text,
                source="user",
            )

        rec = with_db(settings_from(ctx), run)
        if as_json:
            echo_json({"id": rec.id, "session_id": rec.session_id, "turn_id": rec.turn_id,
                       "score": rec.score, "text": rec.text, "source": rec.source})
        else:
            click.echo(f"feedback {rec.id} on {rec.turn_id or rec.session_id}")
