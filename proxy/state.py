"""Everything a running proxy holds, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.auth import Authenticator
from proxy.hooks import RequestHook, ResponseHook
from proxy.limits import Limiter
from proxy.metrics import Metrics
from proxy.recorder import Recorder
from proxy.responses.followup import RecentResponses
from proxy.sessions import SessionTracker
from proxy.upstream.routing import Upstreams
from store.database import Database
from store.feedback import FeedbackStore
from store.keys import KeyStore
from store.settings import MoltSettings
from store.trajectories import TrajectoryStore


@dataclass
class ProxyState:
    settings: MoltSettings
    db: Database
    trajectories: TrajectoryStore
    feedback: FeedbackStore
    keys: KeyStore
    auth: Authenticator
    sessions: SessionTracker
    recorder: Recorder
    upstreams: Upstreams
    metrics: Metrics
    limiter: Limiter
    request_hooks: list[RequestHook] = field(default_factory=list)
    response_hooks: list[ResponseHook] = field(default_factory=list)
    # The latest Responses turns a `previous_response_id` may name (not yet in the store).
    responses: RecentResponses = field(default_factory=RecentResponses)
