"""Silences: mute alerts whose labels match a set of matchers for a time window (Alertmanager semantics)."""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Mapping

from otelproc.alerting.matchers import Matcher, matches_all

__all__ = ["Silence", "SilenceStore"]

# Expired silences are kept this long for the API listing, then dropped (Alertmanager keeps 5 days).
EXPIRED_RETENTION_S = 24 * 3600.0


@dataclass
class Silence:
    id: str
    matchers: list[Matcher]
    starts_at: float  # unix seconds
    ends_at: float
    created_by: str = ""
    comment: str = ""
    updated_at: float = 0.0

    def state(self, now: float) -> str:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def to_api(self, now: float) -> dict:
        from otelproc.alerting.router import iso_time

        return {"id": self.id, "matchers": [m.to_api() for m in self.matchers],
                "startsAt": iso_time(self.starts_at), "endsAt": iso_time(self.ends_at),
                "updatedAt": iso_time(self.updated_at), "createdBy": self.created_by, "comment": self.comment,
                "status": {"state": self.state(now)}}


class SilenceStore:
    """Thread-safe: the HTTP API writes, the dispatcher reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._silences: dict[str, Silence] = {}

    def add(self, matchers: list[Matcher], starts_at: float, ends_at: float, now: float,
            created_by: str = "", comment: str = "", silence_id: str | None = None) -> str:
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        if ends_at <= starts_at:
            raise ValueError(f"endsAt must be after startsAt (got {starts_at} .. {ends_at})")
        if ends_at <= now:
            raise ValueError("endsAt is in the past: the silence would never be active")
        if all(m.matches({}) for m in matchers):
            raise ValueError("the matchers match every alert (e.g. only empty values); add a matcher with a value")
        with self._lock:
            if silence_id is not None:  # update = expire the old one and create a new one, as Alertmanager does
                old = self._silences.get(silence_id)
                if old is None:
                    raise KeyError(silence_id)
                old.ends_at = min(old.ends_at, now)
                old.updated_at = now
            sid = str(uuid.uuid4())
            self._silences[sid] = Silence(sid, list(matchers), starts_at, ends_at, created_by, comment, now)
            self._gc(now)
            return sid

    def expire(self, silence_id: str, now: float) -> None:
        with self._lock:
            s = self._silences.get(silence_id)
            if s is None:
                raise KeyError(silence_id)
            if s.state(now) == "expired":
                raise ValueError(f"silence {silence_id} is already expired")
            s.starts_at = min(s.starts_at, now)  # a pending silence that is expired never becomes active
            s.ends_at = now
            s.updated_at = now

    def get(self, silence_id: str) -> Silence | None:
        with self._lock:
            return self._silences.get(silence_id)

    def list(self) -> list[Silence]:
        with self._lock:
            return list(self._silences.values())

    def silenced_by(self, labels: Mapping[str, str], now: float) -> list[str]:
        with self._lock:
            return [s.id for s in self._silences.values()
                    if s.starts_at <= now < s.ends_at and matches_all(s.matchers, labels)]

    def _gc(self, now: float) -> None:
        for sid in [k for k, s in self._silences.items() if s.ends_at + EXPIRED_RETENTION_S < now]:
            del self._silences[sid]
