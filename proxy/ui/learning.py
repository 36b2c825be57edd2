"""/ui/learning: success rate and average reward over time, with version-change markers."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from proxy.deps import State
from proxy.ui.chart import build_chart
from proxy.ui.login import User
from proxy.ui.web import UiRoute, page
from store.learning import NICE_BUCKETS, learning_series

router = APIRouter(prefix="/ui/learning", route_class=UiRoute, include_in_schema=False)
WINDOWS = {"1": 1, "7": 7, "30": 30, "90": 90, "all": None}


@router.get("")
async def learning(request: Request, state: State, user: User, days: str = "30",
                   bucket: str = "") -> Response:
    window = WINDOWS.get(days, 30)
    width = int(bucket) if bucket.isdigit() and int(bucket) in NICE_BUCKETS else None
    ten = await state.keys.tenant_by_name(user.tenant)
    since = None if window is None else time.time() - window * 86400
    series = None if ten is None else await learning_series(state.db, ten.id, since=since,
                                                            bucket_s=width)
    return page(request, "learning.jinja", {
        "user": user, "nav": "learning", "series": series,
        "chart": build_chart(series) if series is not None else None,
        "days": days if days in WINDOWS else "30", "bucket": width, "buckets": NICE_BUCKETS,
        "windows": list(WINDOWS),
    })
