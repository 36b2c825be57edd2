"""Skill retrieval at 100 / 1,000 / 10,000 skills: latency and recall@k.

    python -m bench.skill_retrieval [--sizes 100,1000,10000] [--queries 200] [--k 3]
                                    [--embedder numpy|torch]

Skills are synthetic but distinct: an action on an object through a channel
("export invoices from the command line"), each with its own description,
tools and a short body. Each labelled query asks for one skill's task in
other words (synonyms for the action and the channel), wrapped in the chat
noise a real agent request carries (a Slack header, a timestamp, an id), and
goes through the same query cleaning as the proxy.

Measured, per library size: the uncached retrieval the proxy runs when a task
is new (embed the query in-process, query Chroma, apply floor / top-k /
budget: `proxy.skills_serving.search`), p50 and p99 over the queries; the
embedding alone; and recall@k (the labelled skill is among the skills
served). Skill vectors are computed once for the largest library and reused
for the smaller ones, so the run is dominated by embedding 10,000 skills
once (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from proxy.skills_serving import TenantSnapshot, search
from store.settings import SkillsSettings
from store.skills.embedding import Embedder, make_embedder
from store.skills.index import SkillIndex, open_client
from store.skills.library import LibrarySkill
from store.skills.query import clean_task_text
from store.skills.skillfile import Skill, content_hash, render_skill_file
from store.skills.tenant_settings import TenantSkillSettings

ACTIONS = {  # action -> words a user would use instead
    "create": "make a new", "update": "change the", "delete": "remove the", "search": "find",
    "summarize": "give me a summary of the", "validate": "check that the", "export": "download the",
    "import": "load the", "merge": "combine the", "schedule": "plan the", "debug": "figure out why the",
    "migrate": "move the", "back-up": "make a backup copy of the", "restore": "bring back the",
    "translate": "put into another language the", "compare": "show differences between the",
    "monitor": "keep an eye on the", "archive": "put away old", "share": "send to colleagues the",
    "review": "look over the", "tag": "label the", "deduplicate": "drop duplicate",
    "encrypt": "protect with a key the", "rename": "give new names to the", "forecast": "predict the",
}
OBJECTS = [
    "invoices", "spreadsheets", "flights", "hotel-bookings", "calendar-events", "pull-requests",
    "docker-containers", "sql-tables", "email-threads", "slack-channels", "expense-reports",
    "customer-tickets", "product-listings", "shipping-orders", "payroll-records", "log-files",
    "dns-records", "ssl-certificates", "kubernetes-pods", "s3-buckets", "git-branches",
    "jira-issues", "meeting-notes", "contracts", "tax-forms", "recipes", "playlists", "photos",
    "podcast-episodes", "blog-posts", "newsletters", "survey-results", "sales-leads",
    "inventory-counts", "warehouse-bins", "delivery-routes", "patient-appointments",
    "lab-results", "student-grades", "course-syllabi", "job-postings", "resumes",
    "vendor-quotes", "purchase-orders", "budget-plans", "bank-statements", "stock-portfolios",
    "crypto-wallets", "insurance-claims", "rental-listings", "mortgage-documents",
    "legal-briefs", "patent-filings", "press-releases", "social-media-posts", "ad-campaigns",
    "seo-keywords", "website-pages", "api-keys", "user-accounts", "access-permissions",
    "firewall-rules", "vpn-configs", "backup-snapshots", "database-indexes", "cron-jobs",
    "ci-pipelines", "test-suites", "feature-flags", "error-alerts", "uptime-checks",
    "translations-files", "font-assets", "video-clips", "audio-transcripts", "subtitles",
    "3d-models", "cad-drawings", "sensor-readings", "weather-forecasts", "energy-bills",
    "fleet-vehicles", "maintenance-logs", "safety-inspections", "event-tickets",
    "restaurant-reservations", "gift-cards", "loyalty-points", "donation-records",
    "volunteer-shifts", "grant-applications", "research-papers", "citations",
    "dataset-versions", "ml-experiments", "model-checkpoints", "gpu-jobs", "chat-transcripts",
    "wiki-articles", "parking-permits",
]
CHANNELS = {  # channel -> (how a skill says it, how a user says it, tools)
    "rest-api": ("through the REST API", "via the API", ["http_request"]),
    "cli": ("from the command line", "in the terminal", ["run_shell"]),
    "dashboard": ("in the web dashboard", "using the admin website", ["browser_click", "browser_read"]),
    "python": ("with a Python script", "by writing some python code", ["run_python"]),
}
NOISE = ["[Slack #ops {t}] ", "[Discord @sam {t}] ", "<@U0{n}> ", "(WhatsApp {t}) ", ""]


def build_skills(n: int, rng: random.Random) -> list[Skill]:
    combos = [(a, o, c) for o in OBJECTS for a in ACTIONS for c in CHANNELS]
    rng.shuffle(combos)
    out: list[Skill] = []
    for action, obj, channel in combos[:n]:
        where, _, tools = CHANNELS[channel]
        thing = obj.replace("-", " ")
        out.append(Skill(
            name=f"{action}-{obj}-{channel}"[:64].strip("-"),
            description=f"Use when asked to {action.replace('-', ' ')} {thing} {where}.",
            body=(f"1. Identify which {thing} are meant.\n2. {action.capitalize()} them {where}.\n"
                  f"3. Confirm the result.\n\nAnti-patterns:\n- Acting on the wrong {thing}."),
            category=obj.split("-")[0], tools=tuple(tools),
        ))
    return out


def query_for(skill: Skill, rng: random.Random) -> str:
    action, channel = None, None
    for a in ACTIONS:
        if skill.name.startswith(a + "-"):
            action = a
    for c in CHANNELS:
        if skill.name.endswith("-" + c):
            channel = c
    assert action is not None and channel is not None
    obj = skill.name[len(action) + 1: -len(channel) - 1].replace("-", " ")
    noise = rng.choice(NOISE).format(t=f"{rng.randint(0, 23)}:{rng.randint(10, 59)}", n=rng.randint(1000, 9999))
    return f"{noise}please {ACTIONS[action]} {obj} {CHANNELS[channel][1]} (ticket {rng.getrandbits(40):x})"


class CachedEmbedder:
    """Embeds each distinct text once; counts the time spent on new texts."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.cache: dict[str, npt.NDArray[np.float32]] = {}

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            for t, v in zip(todo, self.inner.embed(todo)):
                self.cache[t] = v
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--embedder", choices=("numpy", "torch"), default="numpy",
                    help="the model's runtime (skills.embedder)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = random.Random(7)
    defaults = SkillsSettings()
    settings = TenantSkillSettings(True, args.k, defaults.min_similarity, defaults.token_budget, False)

    t0 = time.perf_counter()
    make_embedder(args.embedder, threads=args.threads).embed(["load the model"])
    print(f"{args.embedder} model loaded in {time.perf_counter() - t0:.1f} s")
    everything = build_skills(max(sizes), rng)
    embedder = CachedEmbedder(make_embedder(args.embedder, threads=args.threads))
    t0 = time.perf_counter()
    embedder.embed([s.embedding_text() for s in everything])
    spent = time.perf_counter() - t0
    print(f"embedded {len(everything)} skills in {spent:.1f} s ({spent / len(everything) * 1000:.2f} ms each)")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        index = SkillIndex(lambda: open_client(Path(tmp), None), embedder)
        for size in sizes:
            skills = everything[:size]
            tenant = f"bench{size}"
            pairs = {s.name: (s, content_hash(render_skill_file(s))) for s in skills}
            t0 = time.perf_counter()
            index.sync(tenant, pairs)
            build_s = time.perf_counter() - t0
            snap = TenantSnapshot(tenant, 1, {
                n: LibrarySkill(s, "rev", h, 1) for n, (s, h) in pairs.items()}, settings)
            targets = [rng.choice(skills) for _ in range(args.queries)]
            queries = [clean_task_text(query_for(s, rng)) for s in targets]
            fresh = make_embedder(args.embedder, threads=args.threads)
            search(index, snap, "warm up the path")
            embed_ms, total_ms, hits, hits1 = [], [], 0, 0
            index.embedder = fresh  # queries are new text: embed them for real, every time
            for skill, q in zip(targets, queries):
                t0 = time.perf_counter()
                fresh.embed([q])
                embed_ms.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                sel = search(index, snap, q)
                total_ms.append((time.perf_counter() - t0) * 1000)
                names = [c.skill.name for c in sel.chosen]
                hits += skill.name in names
                ranked = index.query(tenant, fresh.embed([q])[0], 1)
                hits1 += bool(ranked) and ranked[0].name == skill.name
            index.embedder = embedder
            rows.append((size, build_s, statistics.median(total_ms), pct(total_ms, 99),
                         statistics.median(embed_ms), hits / len(targets), hits1 / len(targets)))

    print()
    print(f"retrieval per new task (embed + Chroma + floor/top-{args.k}/budget), {args.queries} labelled queries")
    print(f"{'skills':>7} {'upsert s':>8} {'p50 ms':>8} {'p99 ms':>8} {'embed p50':>10} "
          f"{'recall@' + str(args.k):>9} {'top-1':>6}")
    for size, build_s, p50, p99, emb, recall, top1 in rows:
        print(f"{size:>7} {build_s:>8.2f} {p50:>8.2f} {p99:>8.2f} {emb:>10.2f} {recall:>9.3f} {top1:>6.3f}")
    print("\ncontinuation turns of an agent loop hit the per-task cache: no embedding, no index query.")


if __name__ == "__main__":
    main()
