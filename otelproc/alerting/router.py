"""Routing with Alertmanager semantics: a route tree, aggregation groups, timers, dedup, inhibition, silences.

The :class:`Dispatcher` is a pure state machine driven by an explicit ``now``
(unix seconds): ``ingest(alerts, now)`` adds or refreshes alerts, and
``flush_due(now)`` returns the notifications whose group timer has expired.
The engine calls both under its lock; tests drive them with a fake clock.

Semantics follow Alertmanager's dispatcher and notification pipeline:

* an alert goes to the deepest matching route; siblings after a match are only
  tried when that route has ``continue: true``; no matching child = the parent;
* a new group waits ``group_wait`` before its first notification; afterwards the
  group is evaluated every ``group_interval``;
* a group notifies when it has firing alerts not in its last notification, when
  alerts of its last notification resolved (if the receiver sends resolved), or when
  ``repeat_interval`` has passed since the last notification; otherwise it stays quiet
  (deduplication);
* silenced and inhibited alerts are left out; an alert is resolved when its
  ``ends_at`` passed (it was not refreshed for ``resolve_timeout``).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Iterable, Mapping

from otelproc.alerting.matchers import Matcher, matches_all, parse_matcher
from otelproc.alerting.rules import (DEFAULT_GROUP_BY, DEFAULT_GROUP_INTERVAL, DEFAULT_GROUP_WAIT,
                                     DEFAULT_REPEAT_INTERVAL, InhibitRuleConfig, RouteConfig)
from otelproc.alerting.silences import SilenceStore

__all__ = ["Alert", "Notification", "Route", "Inhibitor", "Dispatcher", "fingerprint", "iso_time"]


def iso_time(t: float) -> str:
    """RFC 3339 with milliseconds in UTC, as Alertmanager writes it."""
    if not math.isfinite(t) or t <= 0:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(t * 1000) % 1000:03d}Z"


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable 16-hex-digit id of a label set (the alert's identity, as in Alertmanager)."""
    h = hashlib.blake2b(digest_size=8)
    for k in sorted(labels):
        h.update(k.encode())
        h.update(b"\xff")
        h.update(labels[k].encode())
        h.update(b"\xff")
    return h.hexdigest()


@dataclass
class Alert:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float          # unix seconds (wall clock) the alert started firing
    ends_at: float            # resolved once now >= ends_at; refreshed by every match
    fingerprint: str = ""
    generator_url: str = ""
    rule: str = ""
    detected_at: float = 0.0  # time.perf_counter() when the rule matched (latency metrics)
    event_ns: int = 0         # event time of the log line / finding that fired it
    status: str = "firing"    # in a Notification: firing or resolved

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.labels)


@dataclass
class Notification:
    """One message to one receiver about one group (what Alertmanager's webhook payload describes)."""

    receiver: str
    group_key: str
    group_labels: dict[str, str]
    status: str               # firing if any alert fires, else resolved
    alerts: list[Alert]       # snapshots with .status set
    external_url: str = ""
    created_at: float = 0.0   # unix seconds

    @property
    def common_labels(self) -> dict[str, str]:
        return _common([a.labels for a in self.alerts])

    @property
    def common_annotations(self) -> dict[str, str]:
        return _common([a.annotations for a in self.alerts])


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    out = dict(maps[0])
    for m in maps[1:]:
        for k in [k for k, v in out.items() if m.get(k) != v]:
            del out[k]
    return out


class Route:
    """A compiled route; children inherit receiver, group_by and timers from their parent."""

    def __init__(self, cfg: RouteConfig, parent: "Route | None" = None, index: int = 0):
        self.receiver = cfg.receiver or (parent.receiver if parent else "")
        self.matchers: list[Matcher] = [parse_matcher(m) for m in cfg.matchers]
        self.continue_ = cfg.continue_
        group_by = cfg.group_by if cfg.group_by is not None else (parent.group_by if parent else DEFAULT_GROUP_BY)
        self.group_by = list(group_by)
        self.group_by_all = self.group_by == ["..."]
        self.group_wait = _pick(cfg.group_wait, parent and parent.group_wait, DEFAULT_GROUP_WAIT)
        self.group_interval = _pick(cfg.group_interval, parent and parent.group_interval, DEFAULT_GROUP_INTERVAL)
        self.repeat_interval = _pick(cfg.repeat_interval, parent and parent.repeat_interval, DEFAULT_REPEAT_INTERVAL)
        # the route's identity in group keys, as Alertmanager prints it: parent key + this route's matchers
        # (plus the child's position, so two routes with equal matchers never share groups)
        self.key = "{}" if parent is None else f"{parent.key}/{index}" + "{" + ",".join(str(m) for m in self.matchers) + "}"
        self.children = [Route(c, self, i) for i, c in enumerate(cfg.routes)]

    def match(self, labels: Mapping[str, str]) -> list["Route"]:
        """Routes an alert with ``labels`` goes to (several only via ``continue``)."""
        if not matches_all(self.matchers, labels):
            return []
        out: list[Route] = []
        for child in self.children:
            found = child.match(labels)
            if found:
                out.extend(found)
                if not child.continue_:
                    break
        return out or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        if self.group_by_all:
            return dict(labels)
        return {k: labels[k] for k in self.group_by if k in labels}

    def walk(self) -> Iterable["Route"]:
        yield self
        for c in self.children:
            yield from c.walk()


def _pick(own: float | None, inherited: float | None, default: float) -> float:
    if own is not None:
        return float(own)
    return float(inherited) if inherited is not None and inherited is not False else float(default)


@dataclass
class _InhibitRule:
    source: list[Matcher]
    target: list[Matcher]
    equal: list[str]


class Inhibitor:
    """Mutes alerts matching a rule's target while a *different* firing alert matches its source
    and has the same values for the ``equal`` labels (e.g. a critical alert mutes the warnings of
    the same service)."""

    def __init__(self, rules: list[InhibitRuleConfig]):
        self.rules = [_InhibitRule([parse_matcher(m) for m in r.source_matchers],
                                   [parse_matcher(m) for m in r.target_matchers], list(r.equal)) for r in rules]

    def inhibited_by(self, alert: Alert, firing: list[Alert]) -> str | None:
        for rule in self.rules:
            if not matches_all(rule.target, alert.labels):
                continue
            for src in firing:
                if src.fingerprint == alert.fingerprint or not matches_all(rule.source, src.labels):
                    continue
                if all(src.labels.get(k, "") == alert.labels.get(k, "") for k in rule.equal):
                    return src.fingerprint
        return None


@dataclass
class _Group:
    key: str
    route: Route
    labels: dict[str, str]
    next_flush: float
    fingerprints: set[str] = field(default_factory=set)
    last_notify: float = -math.inf
    notified_firing: set[str] = field(default_factory=set)


class Dispatcher:
    """Alert registry + aggregation groups. Not thread-safe by itself: the engine holds a lock."""

    def __init__(self, root: Route, inhibitor: Inhibitor | None = None, silences: SilenceStore | None = None,
                 send_resolved: Mapping[str, bool] | None = None, external_url: str = ""):
        self.root = root
        self.inhibitor = inhibitor or Inhibitor([])
        self.silences = silences or SilenceStore()
        self.send_resolved = dict(send_resolved or {})
        self.external_url = external_url
        self.alerts: dict[str, Alert] = {}
        self._refs: dict[str, int] = {}   # fingerprint -> number of groups holding it
        self.groups: dict[str, _Group] = {}

    # ------------------------------------------------------------------ input
    def ingest(self, alerts: Iterable[Alert], now: float) -> None:
        for alert in alerts:
            old = self.alerts.get(alert.fingerprint)
            if old is not None and old.ends_at > now:
                # the same alert again: refresh it (dedup), keep when it started and what first detected it
                merged = replace(old, annotations=alert.annotations, ends_at=max(old.ends_at, alert.ends_at),
                                 generator_url=alert.generator_url or old.generator_url)
                self.alerts[alert.fingerprint] = merged
                continue
            self.alerts[alert.fingerprint] = alert
            if old is not None:
                continue  # a resolved alert firing again before its groups flushed: they still hold it
            for route in self.root.match(alert.labels):
                glabels = route.group_labels(alert.labels)
                gkey = route.key + ":" + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(glabels.items())) + "}"
                group = self.groups.get(gkey)
                if group is None:
                    group = self.groups[gkey] = _Group(gkey, route, glabels, now + route.group_wait)
                if alert.fingerprint not in group.fingerprints:
                    group.fingerprints.add(alert.fingerprint)
                    self._refs[alert.fingerprint] = self._refs.get(alert.fingerprint, 0) + 1

    # ------------------------------------------------------------------ timers
    def next_deadline(self) -> float | None:
        return min((g.next_flush for g in self.groups.values()), default=None)

    def flush_due(self, now: float) -> list[Notification]:
        due = [g for g in self.groups.values() if g.next_flush <= now]
        if not due:
            return []
        firing_all = [a for a in self.alerts.values() if a.ends_at > now]
        out: list[Notification] = []
        for g in due:
            n = self._flush(g, now, firing_all)
            if n is not None:
                out.append(n)
        return out

    def mute_reason(self, alert: Alert, now: float, firing_all: list[Alert] | None = None) -> tuple[list[str], str | None]:
        """(silence ids, inhibiting fingerprint) for an alert."""
        if firing_all is None:
            firing_all = [a for a in self.alerts.values() if a.ends_at > now]
        return self.silences.silenced_by(alert.labels, now), self.inhibitor.inhibited_by(alert, firing_all)

    def _flush(self, g: _Group, now: float, firing_all: list[Alert]) -> Notification | None:
        firing, resolved = [], []
        for fp in g.fingerprints:
            a = self.alerts[fp]
            (firing if a.ends_at > now else resolved).append(a)
        unmuted = []
        for a in firing:
            silenced, inhibited = self.mute_reason(a, now, firing_all)
            if not silenced and inhibited is None:
                unmuted.append(a)
        firing_fps = {a.fingerprint for a in unmuted}
        resolved_notify = [a for a in resolved if a.fingerprint in g.notified_firing]
        send_resolved = self.send_resolved.get(g.route.receiver, True)
        needs = bool(firing_fps - g.notified_firing) \
            or (send_resolved and bool(resolved_notify)) \
            or (bool(firing_fps) and now - g.last_notify >= g.route.repeat_interval)
        note = None
        if needs:
            alerts = [replace(a, status="firing") for a in sorted(unmuted, key=lambda a: a.starts_at)]
            if send_resolved:
                alerts += [replace(a, status="resolved") for a in resolved_notify]
            if alerts:
                note = Notification(g.route.receiver, g.key, dict(g.labels), "firing" if unmuted else "resolved",
                                    alerts, self.external_url, now)
                g.last_notify = now
                g.notified_firing = firing_fps
        # resolved alerts leave the group once handled (notified or not)
        for a in resolved:
            g.fingerprints.discard(a.fingerprint)
            g.notified_firing.discard(a.fingerprint)
            left = self._refs.get(a.fingerprint, 1) - 1
            if left <= 0:
                self._refs.pop(a.fingerprint, None)
                if self.alerts.get(a.fingerprint) is a:
                    del self.alerts[a.fingerprint]
            else:
                self._refs[a.fingerprint] = left
        if not g.fingerprints:
            del self.groups[g.key]
        else:
            g.next_flush = now + g.route.group_interval
        return note
