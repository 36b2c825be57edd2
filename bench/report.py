"""The report folder of `molt bench run`: report.json, summary.md and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.toolworld import drift_days
from bench.toolworld.conventions import conventions_for_day


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def markdown(report: dict[str, Any]) -> str:
    arms = report["arms"]
    lines = [
        f"# molt bench: {len(report['days'])} days x {report['tasks_per_day']} tasks, seed {report['seed']}",
        "",
        ("| arm | success | step accuracy | drift-affected step accuracy | complaints | episodes "
         "| skill tokens / request |"),
        "|---|---|---|---|---|---|---|",
    ]
    for name, a in arms.items():
        o = a["overall"]
        lines.append(f"| {name} | {_fmt(o['success'])} | {_fmt(o['step_accuracy'])} | "
                     f"{_fmt(o['affected_accuracy'])} | {o['complaints']} | {o['episodes']} | "
                     f"{_num(o.get('skill_tokens'), '.0f')} |")
    lines += ["", "## Per day (success / step accuracy)", ""]
    drifts = set(drift_days())
    head = "| day | " + " | ".join(arms) + " |"
    lines += [head, "|---" * (len(arms) + 1) + "|"]
    for day in report["days"]:
        cells = []
        for a in arms.values():
            d = a["per_day"].get(str(day))
            cells.append(f"{_fmt(d['success'])} / {_fmt(d['step_accuracy'])}" if d else "-")
        mark = " (drift)" if day in drifts else ""
        lines.append(f"| {day}{mark} | " + " | ".join(cells) + " |")
    lines += gap_table(report)
    lines += drift_table(report)
    lines += by_drift_table(report)
    lines += extraction_table(report)
    lines += tokens_table(report)
    lines += window_table(report)
    lines += overnight_table(report)
    lines += next_day_table(report)
    lines += ttt_table(report)
    return "\n".join(lines) + "\n"


def ttt_table(report: dict[str, Any]) -> list[str]:
    """The ttt arm (bench/ttt_arm.py): its later episodes, each way, and what TTT costs."""
    t = (report["arms"].get("ttt") or {}).get("ttt")
    if not t:
        return []
    lines = ["", "## In-place TTT: the later episodes of each day's session", "",
             "| way | step accuracy | drift-affected step accuracy | success | episodes |",
             "|---|---|---|---|---|"]
    for way, o in t["later"].items():
        lines.append(f"| {way} | {_fmt(o['step_accuracy'])} | {_fmt(o['affected_accuracy'])} | "
                     f"{_fmt(o['success'])} | {o['episodes']} |")
    rec = t["recovered"]
    loss = t["heldout_windowed_loss"]

    def later(way: str) -> str:
        return _num(loss[way].get("later"), ".3f")

    trained = t["trained"]
    cost = trained if isinstance(trained, str) else f"{trained.get('cpu_s')} CPU s of training"
    tps = t["tokens_per_s"]
    share = (f"Share of the in-context gain TTT serving recovers: step accuracy "
             f"{_fmt(rec['step_accuracy'])}, drift-affected {_fmt(rec['affected_accuracy'])} "
             "(target: at least 50%).")
    held = (f"Held-out next-token loss on long sessions through a {loss['window']}-token window "
            f"(windows after the first): without TTT {later('without_ttt')}, TTT reset every "
            f"window {later('ttt_reset_every_window')}, TTT carried through the session "
            f"{later('ttt')}.")
    speed = (f"Decoding through serving: {tps['without_ttt']} tokens/s without TTT, "
             f"{tps['ttt']} with. TTT layers: {cost}.")
    lines += ["", share, "", held, "", speed]
    return lines


def gap_recovered(report: dict[str, Any], arm: str, day: int, metric: str,
                  part: str = "per_day") -> float | None:
    """Share of the baseline-to-oracle gap that ``arm`` closes on ``day``, or None.

    ``part`` is ``per_day`` (all of the day's episodes) or ``per_day_late``
    (its second half). None when the day or an arm is missing or the oracle is
    not ahead of the baseline on that day (no gap to close).
    """
    arms = report["arms"]
    rows = [arms.get(a, {}).get(part, {}).get(str(day)) for a in ("baseline", "oracle", arm)]
    if any(r is None for r in rows):
        return None
    base, oracle, value = (r[metric] for r in rows)  # type: ignore[index]
    if oracle - base <= 0:
        return None
    return float((value - base) / (oracle - base))


def gap_table(report: dict[str, Any]) -> list[str]:
    """Markdown rows: per drift day, how much of the baseline-oracle gap each arm recovers."""
    learners = [a for a in report["arms"] if a not in ("baseline", "oracle")]
    days = [d for d in report["days"] if d in set(drift_days())]
    if not learners or not days or not {"baseline", "oracle"} <= set(report["arms"]):
        return []
    lines = ["", "## Gap recovered on drift days (arm - baseline) / (oracle - baseline)", "",
             "Whole day: all of the drift day's episodes, the first ones included (before anything",
             "could be learned). Second half: the day's later half of episodes.", "",
             "| day | metric | " + " | ".join(f"{a} (whole day)" for a in learners) + " | "
             + " | ".join(f"{a} (second half)" for a in learners) + " |",
             "|---" * (2 * len(learners) + 2) + "|"]
    for day in days:
        for metric in ("success", "step_accuracy"):
            cells = [_fmt(gap_recovered(report, a, day, metric, part))
                     for part in ("per_day", "per_day_late") for a in learners]
            lines.append(f"| {day} | {metric} | " + " | ".join(cells) + " |")
    return lines


def extraction_shares(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per learning arm: each drift event and whether an accepted rule stated it truly."""
    from bench.extraction import extraction

    return {name: extraction(a["rules"], report["days"]) for name, a in report["arms"].items()
            if a.get("rules") is not None and (a.get("evolutions") or a.get("cadence", "none") != "none")}


def extraction_table(report: dict[str, Any]) -> list[str]:
    """Markdown rows: the share of drift events whose accepted rule states the true convention."""
    shares = extraction_shares(report)
    if not shares or not any(shares.values()):
        return []
    arms = list(shares)
    lines = ["", "## Extraction: drift events whose accepted rule states the true convention", "",
             ("Checked against toolworld's schedule after the run (the form, or the wished value, "
              "next to its argument); the rule's name and the episode it was accepted after."),
             "\"quoted only\": the rule states it only inside the tool's own text, quoted as data.", "",
             "| drift | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    events = shares[arms[0]]
    for i, ev in enumerate(events):
        cells = []
        for a in arms:
            hit = shares[a][i]
            rule = hit["rule"]
            mark = "yes" if rule and rule["how"] == "words" else "quoted only"
            cells.append(f"{mark}: {rule['name']} (day {rule['day']}, after episode {rule['after_episode']})"
                         if rule else "no")
        lines.append(f"| day {ev['day']}: {ev['family']}={ev['value']} | " + " | ".join(cells) + " |")
    totals = [f"{sum(e['extracted'] for e in shares[a])}/{len(shares[a])} in molt's words"
              f" (+{sum(e['quoted'] for e in shares[a])} quoted only)" for a in arms]
    lines.append("| **share** | " + " | ".join(totals) + " |")
    return lines


def _num(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def drift_table(report: dict[str, Any]) -> list[str]:
    """Per day: accuracy on the steps a drift changed, and on the steps it left as on a base day."""
    arms = report["arms"]
    lines = ["", "## Per day: drift-affected steps / base-convention steps (step accuracy)", "",
             "| day | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for day in report["days"]:
        cells = []
        for a in arms.values():
            d = a["per_day"].get(str(day)) or {}
            cells.append(f"{_fmt(d.get('affected_accuracy'))} / {_fmt(d.get('unaffected_accuracy'))}")
        lines.append(f"| {day} | " + " | ".join(cells) + " |")
    return lines


def by_drift_table(report: dict[str, Any]) -> list[str]:
    """Per day: the drift-affected steps split by the drift they depend on (right / steps)."""
    arms = report["arms"]
    if not any((a["per_day"].get(str(d)) or {}).get("by_drift") for a in arms.values()
               for d in report["days"]):
        return []
    lines = ["", "## Per day: drift-affected steps by drift (right / steps)", "",
             "A step counts under every drifted convention that alone changes its right call.",
             "", "| day | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for day in report["days"]:
        cells = []
        for a in arms.values():
            drifts = (a["per_day"].get(str(day)) or {}).get("by_drift") or {}
            cells.append(", ".join(f"{k} {ok}/{n}" for k, (n, ok) in drifts.items()) or "-")
        lines.append(f"| {day} | " + " | ".join(cells) + " |")
    return lines


def seen_split(by_drift: dict[str, list[int]], window_day: int) -> tuple[list[int], list[int]]:
    """[steps, right] on drifts already in force on `window_day` (what the window could learn),
    and on drifts that came after it (steps that depend on both count as after)."""
    in_force = conventions_for_day(window_day)
    seen, new = [0, 0], [0, 0]
    for key, (n, ok) in by_drift.items():
        parts = [p.split("=", 1) for p in key.split("+")]
        side = seen if all(len(p) == 2 and in_force.get(p[0]) == p[1] for p in parts) else new
        side[0] += n
        side[1] += ok
    return seen, new


def _share(counts: list[int]) -> str:
    n, ok = counts
    return f"{_fmt(ok / n)} ({n})" if n else "-"


def tokens_table(report: dict[str, Any]) -> list[str]:
    """Per day: step accuracy and the skill tokens injected per model request, windows marked."""
    arms = report["arms"]
    if not any("skill_tokens" in a["overall"] for a in arms.values()):
        return []
    after = {int(w["after_day"]) for a in arms.values() for w in a.get("windows") or []}
    lines = ["", "## Per day: step accuracy / skill tokens per request", "",
             "Skill tokens: the proxy's estimate (characters / 4) of the skills injected into",
             "each of the day's model requests, averaged. \"(window after)\": an idle window",
             "followed the day.",
             "", "| day | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for day in report["days"]:
        cells = []
        for a in arms.values():
            d = a["per_day"].get(str(day)) or {}
            cells.append(f"{_fmt(d.get('step_accuracy'))} / {_num(d.get('skill_tokens'), '.0f')}")
        mark = " (window after)" if day in after else ""
        lines.append(f"| {day}{mark} | " + " | ".join(cells) + " |")
    return lines


def window_table(report: dict[str, Any]) -> list[str]:
    """Markdown rows: the rl arms' idle windows (bench/rl_arm.py), what they cost and decided."""
    rows = [(name, w) for name, a in report["arms"].items() for w in a.get("windows") or []
            if w.get("kind") != "ttt-delta"]
    if not rows:
        return []
    lines = ["", "## RL idle windows", "",
             ("| arm | after day | PRM | steps trained on | RL steps | mean reward | KL | "
              "train CPU min | window CPU min (wall) | gate | held-out accuracy | "
              "internalized skills |"),
             "|---" * 12 + "|"]
    for name, w in rows:
        gate = w.get("gate") or {}
        held = (gate.get("heldout") or {})
        ref, cand = (held.get("reference") or {}), (held.get("candidate") or {})
        prm = "verifier (upper bound)" if w.get("prm") == "verifier" else w.get("prm", "-")
        lines.append(
            f"| {name} | {w.get('after_day')} | {prm} | {w.get('steps_trained_on', '-')} | "
            f"{w.get('steps', '-')} | {_num(w.get('mean_reward'), '.3f')} | {_num(w.get('kl'), '.4f')} | "
            f"{_num(w.get('train_cpu_min'), '.1f')} | {_num(w.get('window_cpu_min'), '.1f')} "
            f"({_num(w.get('window_wall_min'), '.1f')}) | {gate.get('status', w.get('status', '-'))} | "
            f"{_fmt(ref.get('accuracy'))} -> {_fmt(cand.get('accuracy'))} | "
            f"{internalized(gate)} |")
    return lines + agreement_table(rows) + skill_tests_table(rows)


def _pair(figures: dict[str, Any] | None) -> str:
    """A gate set's reference -> candidate accuracy, over how many steps both were scored on."""
    f = figures or {}
    ref, cand = (f.get("reference") or {}), (f.get("candidate") or {})
    return f"{_fmt(ref.get('accuracy'))} -> {_fmt(cand.get('accuracy'))} ({f.get('paired', 0)})"


def overnight_table(report: dict[str, Any]) -> list[str]:
    """The ttt-overnight arms' windows (bench/ttt_overnight.py): the scheduler's job, what the
    overnight pass streamed and added, the gate's decision and figures, what is served next."""
    rows = [(name, a, w) for name, a in report["arms"].items() for w in a.get("windows") or []
            if w.get("kind") == "ttt-delta"]
    if not rows:
        return []
    lines = ["", "## Overnight in-place TTT update (`ttt_delta`) windows", "",
             ("| arm | after day | job | parent -> delta version | sessions streamed | tokens | "
              "chunk updates (clipped) | largest layer ||dW||_F (/ ||W_down||_F) | gate | held-out accuracy "
              "(paired steps) | retention accuracy | served next day | window wall min |"),
             "|---" * 13 + "|"]
    notes = []
    for name, a, w in rows:
        u, gate = w.get("update") or {}, w.get("gate") or {}
        status = gate.get("status", "-")
        served = w.get("served_next") or "base"
        if w.get("promoted_ungated"):
            served += " (ungated: promoted despite the gate)"
        lines.append(
            f"| {name} | {w.get('after_day')} | {w.get('job_status')} | {w.get('parent')} -> "
            f"{w.get('version') or '-'} | {_num(u.get('sessions'), '.0f')} | "
            f"{_num(u.get('tokens'), '.0f')} | {_num(u.get('updates'), '.0f')} "
            f"({_num(u.get('clipped'), '.0f')}) | {_num(u.get('delta_norm'), '.4f')} "
            f"({_num(u.get('delta_ratio'), '.3f')}{', bounded' if u.get('bounded') else ''}) | "
            f"{status} | "
            f"{_pair(gate.get('heldout'))} | {_pair(gate.get('retention'))} | {served} | "
            f"{_num(w.get('window_wall_min'), '.2f')} |")
        if w.get("job_status") != "succeeded":
            notes.append(f"- {name}: the job {w.get('job')} ended {w.get('job_status')}: "
                         f"{w.get('error') or 'no version'}.")
        elif status == "rejected":
            why = "; ".join(gate.get("reasons") or []) or "no reason recorded"
            then = ("it was served anyway (this arm ignores the gate)" if w.get("promoted_ungated")
                    else f"the next days are served by {served}, the version the delta was "
                    "judged against")
            notes.append(f"- {name}: the gate **rejected** the delta {w.get('version')} "
                         f"({why}); {then}.")
        layers = a.get("ttt_layers") or {}
        trained = layers.get("trained")
        if trained is not None:
            cost = trained if isinstance(trained, str) else (
                f"trained {trained.get('steps')} steps, {trained.get('cpu_s')} CPU s")
            notes.append(f"- {name}: the days were served by {layers.get('version')} (TTT "
                         f"layers: {cost}).")
    return lines + ([""] + notes if notes else [])


def next_day_table(report: dict[str, Any]) -> list[str]:
    """Every idle window (RL or overnight TTT): the day before it and the day after, side by
    side, with the gate's decision."""
    days = [str(d) for d in report["days"]]
    out = ["", "## The day after each idle window", "",
           ("| arm | window | gate | served the next day | step accuracy: day before -> next "
            "day | drift-affected step accuracy | base-convention step accuracy | drifts in force "
            "at the window: day before -> next day (steps) | the same, every later day | drifts after "
            "the window, next day (steps) |"),
           "|---" * 10 + "|"]
    for name, a in report["arms"].items():
        for w in a.get("windows") or []:
            day = str(w.get("after_day"))
            if day not in days or days.index(day) + 1 >= len(days):
                continue
            nxt = days[days.index(day) + 1]
            before, after = a["per_day"].get(day) or {}, a["per_day"].get(nxt) or {}
            kind = "overnight TTT" if w.get("kind") == "ttt-delta" else "RL"
            status = (w.get("gate") or {}).get("status", w.get("status", "-"))
            if w.get("promoted_ungated"):
                status += ", served anyway"
            served = ", ".join(f"{v} ({n})" for v, n in
                               sorted((after.get("served_versions") or {}).items())) or "-"
            moves = " | ".join(f"{_fmt(before.get(k))} -> {_fmt(after.get(k))}" for k in
                               ("step_accuracy", "affected_accuracy", "unaffected_accuracy"))
            seen_before, _ = seen_split(before.get("by_drift") or {}, int(day))
            seen_after, new_after = seen_split(after.get("by_drift") or {}, int(day))
            later = [seen_split((a["per_day"].get(d) or {}).get("by_drift") or {}, int(day))[0]
                     for d in days[days.index(day) + 1:]]
            seen_later = [sum(c[0] for c in later), sum(c[1] for c in later)]
            out.append(f"| {name} | {kind}, after day {day} | {status} | day {nxt}: {served} | "
                       f"{moves} | {_share(seen_before)} -> {_share(seen_after)} | {_share(seen_later)} | "
                       f"{_share(new_after)} |")
    return out if len(out) > 5 else []


def internalized(gate: dict[str, Any]) -> str:
    """The window's internalized skills and their estimated saving, for the table."""
    found = gate.get("internalization") or {}
    skills = gate.get("internalized_skills") or []
    if not found:
        return "-"
    if not skills:
        return "none"
    return f"{', '.join(skills)} (-{found.get('tokens_per_request', 0):.0f} tokens)"


def skill_tests_table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Each skill the gate tested: with / without it, candidate and reference."""
    out = ["", "### Skills tested for internalization (through serving, the gate's check)", "",
           ("| arm | after day | skill | steps served it (scored) | candidate with -> without | "
            "reference with -> without | internalized | why |"), "|---" * 8 + "|"]
    for name, w in rows:
        for t in ((w.get("gate") or {}).get("internalization") or {}).get("tested") or []:
            out.append(
                f"| {name} | {w.get('after_day')} | {t['name']} | {t['steps']} ({t['paired']}) | "
                f"{_fmt(t['candidate_with'])} -> {_fmt(t['candidate_without'])} | "
                f"{_fmt(t['reference_with'])} -> {_fmt(t['reference_without'])} | "
                f"{'yes' if t['internalized'] else 'no'} | {t['reason']} |")
    return out if len(out) > 5 else []


def agreement_table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """How good each PRM source is: the share of steps whose reward sign matches the verifier's."""
    out = ["", "### Step rewards' agreement with the verifier (the report's check, never training's)",
           "", "| arm | after day | source | steps | agreement |", "|---|---|---|---|---|"]
    for name, w in rows:
        agreement = w.get("agreement_with_verifier") or {}
        for source, a in sorted((agreement.get("recorded") or {}).items()):
            out.append(f"| {name} | {w.get('after_day')} | {source} (recorded) | {a['steps']} | "
                       f"{_fmt(a['agreement'])} |")
        learned = agreement.get("learned_prm") or {}
        if "agreement" in learned:
            out.append(f"| {name} | {w.get('after_day')} | learned PRM (held-out, fitted on "
                       f"{learned['labels']} labels) | {learned['heldout_steps']} | "
                       f"{_fmt(learned['agreement'])} |")
        elif learned:
            out.append(f"| {name} | {w.get('after_day')} | learned PRM | - | {learned.get('status')} |")
    return out if len(out) > 5 else []


def plot(report: dict[str, Any], path: Path, metric: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    days = report["days"]
    for name, a in report["arms"].items():
        ys = [a["per_day"][str(d)][metric] for d in days]
        ax.plot(days, [100 * y for y in ys], marker="o", label=name)
    for d in drift_days():
        if days and days[0] < d <= days[-1]:
            ax.axvline(d - 0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(days)
    ax.set_xlabel("simulated day (dashed: a convention drifts)")
    ax.set_ylabel(f"{title} (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], out: Path) -> None:
    report["extraction"] = extraction_shares(report)
    (out / "summary.md").write_text(markdown(report))
    plot(report, out / "success.png", "success", "episode success")
    plot(report, out / "step_accuracy.png", "step_accuracy", "step accuracy")
