"""The messages sent: their ids, their bodies (``standard`` JSON or ``slack``) and the fleet outcome.

A ``standard`` body is ``{"type": ..., "timestamp": ..., "data": {...}}``: ``data`` is the audit
entry's own fields (:class:`~promptreg.AuditEvent`, ``model_dump(mode="json")``) for every audit
type, the fleet's answer for ``fleet.*``, the revisions for ``registry.resync``. A ``slack`` body is
``{"text": ...}``: one line saying the same.

A message's id is derived from the endpoint, the audit entry (its revision and fingerprint) and the
step, so every attempt of a message, by this worker or by one that took over, carries the same
``webhook-id``: a receiver deduplicates on it (delivery is at least once).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from promptreg.registry.fleet import FleetMember, FleetWait
from promptreg.registry.models import AuditEvent, describe_label_move
from promptreg.registry.webhooks.event_types import FLEET_CONVERGED, FLEET_LAGGING, LABEL_MOVED, RESYNC
from promptreg.registry.webhooks.models import Position, WebhookEndpoint


@dataclass(frozen=True)
class FleetOutcome:
    """The fleet's answer to a label move: the wait's result, and the lagging clients' records."""

    wait: FleetWait
    lagging: list[FleetMember] = field(default_factory=list)

    @property
    def type(self) -> str:
        """``fleet.converged`` or ``fleet.lagging``."""
        return FLEET_CONVERGED if self.wait.complete else FLEET_LAGGING


@dataclass(frozen=True)
class Message:
    """One message to deliver: ``after`` is the endpoint's position once it is done."""

    id: str
    type: str
    rev: int
    body: str
    after: Position


def fingerprint(event: AuditEvent) -> str:
    """A short digest identifying an audit entry (a rewritten history has other entries at a revision)."""
    fields = [event.rev, event.at.isoformat(), event.action, event.prompt, event.label, event.version, event.author]
    return hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()[:32]


def message_id(endpoint_id: str, *parts: object) -> str:
    """``msg_`` + 32 hex digits derived from the endpoint and what the message is about."""
    digest = hashlib.sha256(json.dumps([endpoint_id, *parts], default=str).encode()).hexdigest()
    return "msg_" + digest[:32]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _body(endpoint: WebhookEndpoint, kind: str, at: datetime, data: dict[str, Any], text: str) -> str:
    if endpoint.format == "slack":
        return json.dumps({"text": text}, ensure_ascii=False, separators=(",", ":"))
    return json.dumps({"type": kind, "timestamp": _iso(at), "data": data}, ensure_ascii=False, separators=(",", ":"))


def _slack(text: str) -> str:
    # Slack's mrkdwn reads <...> as links and mentions: escape what came from the audit entry.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _who(event: AuditEvent) -> str:
    return f" by {event.author}" if event.author else ""


def describe_event(kind: str, event: AuditEvent) -> str:
    """One line about an audit entry, as the slack format says it."""
    head = f"promptreg: {event.prompt}:"
    if kind == LABEL_MOVED:
        text = f"{head} {describe_label_move(event.label, event.previous_version, event.version)} ({event.action}"
        text += f"{_who(event)}{', forced' if event.forced else ''})"
    elif kind.startswith("request."):
        verb = {"request.pending": "requested", "request.approved": "approved", "request.rejected": "rejected"}[kind]
        target = f" {event.label} -> v{event.version}" if event.label and event.version else ""
        text = f"{head} move request {event.request}{target} {verb}{_who(event)}"
    else:
        where = f" {event.label}" if event.label else ""
        text = f"{head} {event.action}{where}{_who(event)} (rev {event.rev})"
    return text + (f": {event.reason}" if event.reason else "")


def event_message(endpoint: WebhookEndpoint, event: AuditEvent, kind: str, step: int, after: Position) -> Message:
    """The message of one audit entry's step ``step``, of type ``kind``."""
    data = event.model_dump(mode="json")
    body = _body(endpoint, kind, event.at, data, _slack(describe_event(kind, event)))
    return Message(message_id(endpoint.id, event.rev, fingerprint(event), step, kind), kind, event.rev, body, after)


def fleet_message(
    endpoint: WebhookEndpoint, event: AuditEvent, outcome: FleetOutcome, step: int, after: Position, now: datetime
) -> Message:
    """``fleet.converged`` or ``fleet.lagging`` after the label move ``event``."""
    wait = outcome.wait
    data = {
        "rev": event.rev, "prompt": event.prompt, "label": event.label, "version": event.version,
        "complete": wait.complete, "reached": wait.reached, "lagging": wait.lagging, "gone": wait.gone,
        "elapsed": round(wait.elapsed, 3),
        "lagging_clients": [
            {"client_id": m.client_id, "client_name": m.client_name, "host": m.host, "pid": m.pid, "rev": m.rev}
            for m in outcome.lagging
        ],
    }  # fmt: skip
    target = f"{event.label} -> {'deleted' if event.version is None else f'v{event.version}'}"
    if wait.complete:
        text = f"promptreg: {event.prompt}: {target} served by all {len(wait.reached)} reporting clients"
    else:
        names = ", ".join(m.client_name or m.client_id for m in outcome.lagging) or ", ".join(wait.lagging)
        total = len(wait.reached) + len(wait.lagging)
        text = f"promptreg: {event.prompt}: {target}: {len(wait.lagging)} of {total} clients lag after "
        text += f"{wait.elapsed:.1f} s: {names}"
    body = _body(endpoint, outcome.type, now, data, _slack(text))
    return Message(message_id(endpoint.id, event.rev, fingerprint(event), step, "fleet"), outcome.type, event.rev,
                   body, after)  # fmt: skip


def resync_message(endpoint: WebhookEndpoint, cursor: Position, current: int, reason: str, now: datetime) -> Message:
    """``registry.resync``: the endpoint's cursor jumps from ``cursor.rev`` to ``current``."""
    data = {"from_rev": cursor.rev, "to_rev": current, "reason": reason}
    text = (f"promptreg: webhook deliveries resynced from rev {cursor.rev} to rev {current} ({reason}): "
            "events in between may be missing")  # fmt: skip
    body = _body(endpoint, RESYNC, now, data, text)
    msg_id = message_id(endpoint.id, "resync", cursor.rev, cursor.fingerprint, current)
    return Message(msg_id, RESYNC, current, body, Position(rev=current))
