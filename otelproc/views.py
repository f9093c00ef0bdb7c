"""Read-only views over the store for the CLI (``otelproc patterns top``, ``anomalies``, ``alerts``,
``tail``) and the demo summary.

Each view is one parameterised SQL query over otelproc's tables (``otel_logs``,
``log_patterns``, ``pattern_counts``, ``anomalies``, ``alerts``; see
``otelproc/store/sql/``) returning :class:`otelproc.store.Rows`, which the CLI prints as a
table, JSON lines or CSV. Values always travel as server-side parameters.

``since`` windows are relative to the store's ``now()``, as in Grafana's "last 1 hour";
``since=0`` means all the data. Pattern ids are shown as 16 lowercase hex digits, the form
of the ``log.pattern.id`` attribute the ``otlphttp`` exporter forwards.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from otelproc.config import parse_duration
from otelproc.store import Rows, Store

__all__ = ["parse_since", "parse_pattern_id", "parse_range", "parse_time", "scalar", "iso", "patterns_top", "pattern_diff",
           "pattern_diff_sql", "anomalies", "incidents", "alerts", "tail", "incident_evidence", "check_limit", "DEFAULT_LIMIT"]

DEFAULT_LIMIT = 20
MAX_LIMIT = 100_000
_HEX_ID = "leftPad(lower(hex({col})), 16, '0')"
_TIME = "formatDateTime({col}, '%F %T')"
# anomalies.Explanation as one line: value, window share vs baseline share, lift, p (see store/sql/anomalies.sql)
_EXPLANATION = """arrayStringConcat(arrayMap(e -> concat(
                   if(tupleElement(e, 'Attribute') = 'log.pattern.id', 'pattern ', concat(tupleElement(e, 'Attribute'), '=')),
                   tupleElement(e, 'Value'), ' ', toString(round(100 * tupleElement(e, 'Share'))), '% vs ',
                   toString(round(100 * tupleElement(e, 'BaselineShare'))), '% (x', toString(round(tupleElement(e, 'Lift'), 2)),
                   ', p=1e', toString(toInt32(floor(tupleElement(e, 'Log10P')))), ')'), Explanation), '; ')"""


def parse_since(text: str | float | None) -> int:
    """``1h``, ``30m``, ``2d``, ``90`` (seconds) or ``all``/``0``/None -> whole seconds (0 = no limit).

    Raises ValueError naming the accepted forms.
    """
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "all")):
        return 0
    try:
        seconds = float(parse_duration(text))
    except ValueError:
        raise ValueError(f"--since: expected a duration like 15m, 1h, 2d or 'all', got {text!r}") from None
    if seconds < 0:
        raise ValueError(f"--since: must be >= 0, got {text!r}")
    return int(round(seconds))


def parse_pattern_id(text: str | int) -> int:
    """A pattern id as printed by the views (16 hex digits, optional ``0x``) or as a decimal UInt64."""
    if isinstance(text, int):
        value = text
    else:
        t = text.strip().lower()
        try:
            if t.startswith("0x"):
                value = int(t[2:], 16)
            elif len(t) == 16 and all(c in "0123456789abcdef" for c in t):
                value = int(t, 16)
            else:
                value = int(t, 10)
        except ValueError:
            raise ValueError(f"--pattern: expected 16 hex digits (as `otelproc patterns top` prints) or a "
                             f"decimal id, got {text!r}") from None
    if not 0 <= value < 2**64:
        raise ValueError(f"--pattern: {text!r} is not a UInt64")
    return value


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"--limit: must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def scalar(store: Store, sql: str, params: Mapping[str, Any] | None = None) -> Any:
    """The single value of a one-row, one-column query."""
    rows = store.query_rows(sql, params)
    return rows[0][0] if rows else None


def iso(time_ns: int) -> str:
    """Event time (ns since the epoch) as ``YYYY-MM-DD HH:MM:SS`` UTC."""
    return datetime.fromtimestamp(time_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def patterns_top(store: Store, *, service: str = "", since_s: int = 0, limit: int = DEFAULT_LIMIT) -> Rows:
    """The most frequent patterns (lines per pattern in the window, from ``pattern_counts``).

    Columns: service, pattern_id, count, pct (of all lines in the window, per cent), errors
    (lines with SeverityNumber >= 17), first_minute, last_minute, template.
    """
    sql = f"""
        SELECT c.ServiceName AS service, {_HEX_ID.format(col='c.PatternId')} AS pattern_id,
               sum(c.Count) AS count,
               round(100 * count / sum(count) OVER (), 2) AS pct,
               sumIf(c.Count, c.SeverityNumber >= 17) AS errors,
               {_TIME.format(col='min(c.Minute)')} AS first_minute,
               {_TIME.format(col='max(c.Minute)')} AS last_minute,
               any(t.Template) AS template
        FROM pattern_counts AS c
        LEFT JOIN (SELECT ServiceName, PatternId, any(Template) AS Template
                   FROM log_patterns GROUP BY ServiceName, PatternId) AS t
               ON t.ServiceName = c.ServiceName AND t.PatternId = c.PatternId
        WHERE ({{service:String}} = '' OR c.ServiceName = {{service:String}})
          AND ({{since:UInt32}} = 0 OR c.Minute >= now() - toIntervalSecond({{since:UInt32}}))
        GROUP BY c.ServiceName, c.PatternId
        ORDER BY count DESC, service, pattern_id
        LIMIT {{limit:UInt32}}"""
    return store.query_rows(sql, {"service": service, "since": since_s, "limit": check_limit(limit)})


def parse_range(text: str, what: str) -> int:
    """A range length (``1h``, ``1d``, ``90`` seconds) -> whole seconds > 0; ValueError naming ``what``."""
    try:
        seconds = int(round(float(parse_duration(text))))
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise ValueError(f"{what}: expected a duration > 0 like 1h or 1d, got {text!r}")
    return seconds


def parse_time(text: str | None, now_s: float, what: str) -> float:
    """``now``, a duration back from now (``2h``, ``1d``) or an ISO time (``2026-12-08T03:00:00``, UTC unless
    it carries an offset) -> unix seconds. Raises ValueError naming the option and the accepted forms."""
    if text is None or text.strip().lower() in ("", "now"):
        return now_s
    try:
        return now_s - float(parse_duration(text))
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{what}: expected now, a duration back from now (2h, 1d) or an ISO time "
                         f"(2026-12-08T03:00:00), got {text!r}") from None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def pattern_diff_sql(window_from: str, window_to: str, baseline_from: str, baseline_to: str, where: str = "1",
                     p_max: str = "{p:Float64}", limit: str = "{limit:UInt32}") -> str:
    """The pattern diff query over ``pattern_counts`` with the four range bounds as SQL DateTime expressions
    (query parameters for the CLI, Grafana macros for the dashboard panel; one query for both).

    Per service and pattern: lines in the window and the baseline, their shares of the service's lines
    in each range, the lift (window share / baseline share, smoothed) and log10 p: the Chernoff bound
    exp(-n KL(window share || baseline share)) on the binomial tail of the pattern's lines among the
    window's n lines (baseline share taken at its conservative side, (c + 1)/(n + 1) for a rise,
    c/(n + 1) for a fall), Bonferroni-adjusted for the service's patterns. status: new (no baseline
    lines), gone (no window lines while the service logged), up, down. Rows with log10 p <= log10(p_max).
    """
    kl = ("(if(q > 0, q * ln(q / p0), 0) + if(q < 1, (1 - q) * ln((1 - q) / (1 - p0)), 0))")
    return f"""
        SELECT service, {_HEX_ID.format(col='pid')} AS pattern_id,
               multiIf(cb = 0, 'new', cw = 0, 'gone', q > qb, 'up', 'down') AS status,
               cw AS count_window, cb AS count_baseline, round(100 * q, 3) AS pct_window,
               round(100 * qb, 3) AS pct_baseline,
               round(((cw + 0.5) / (nw + 0.5)) / ((cb + 0.5) / (nb + 0.5)), 3) AS lift,
               round(greatest(-300, if((q > qb AND q > p0) OR (q < qb AND q < p0), -nw * {kl} / ln(10), 0)
                     + log10(m)), 2) AS log10_p,
               t.Template AS template
        FROM (
            SELECT ServiceName AS service, PatternId AS pid,
                   toFloat64(sumIf(Count, Minute >= {window_from} AND Minute < {window_to})) AS cw,
                   toFloat64(sumIf(Count, Minute >= {baseline_from} AND Minute < {baseline_to})) AS cb,
                   sum(cw) OVER (PARTITION BY ServiceName) AS nw, sum(cb) OVER (PARTITION BY ServiceName) AS nb,
                   count() OVER (PARTITION BY ServiceName) AS m,
                   if(nw > 0, cw / nw, 0) AS q, if(nb > 0, cb / nb, 0) AS qb,
                   least(greatest(if(q > qb, (cb + 1) / (nb + 1), cb / (nb + 1)), 1e-12), 1 - 1e-12) AS p0
            FROM pattern_counts
            WHERE (Minute >= {window_from} AND Minute < {window_to} OR Minute >= {baseline_from}
                   AND Minute < {baseline_to}) AND {where}
            GROUP BY ServiceName, PatternId
        ) AS d
        LEFT JOIN (SELECT ServiceName, PatternId, any(Template) AS Template FROM log_patterns
                   GROUP BY ServiceName, PatternId) AS t ON t.ServiceName = d.service AND t.PatternId = d.pid
        WHERE nw > 0 AND nb > 0 AND log10_p <= log10({p_max})
        ORDER BY log10_p, service, pattern_id
        LIMIT {limit}"""


def pattern_diff(store: Store, *, window_s: int, baseline_s: int, end_s: float, baseline_end_s: float | None = None,
                 service: str = "", p: float = 1e-3, limit: int = DEFAULT_LIMIT) -> Rows:
    """New, gone and shifted patterns per service: the ``window_s`` ending at ``end_s`` (unix seconds)
    against the ``baseline_s`` ending at ``baseline_end_s`` (default: where the window starts).

    Columns: service, pattern_id, status (new / gone / up / down), count_window, count_baseline,
    pct_window, pct_baseline (shares of the service's lines, per cent), lift, log10_p (see
    :func:`pattern_diff_sql`), template; most significant first. Ranges are whole minutes (pattern_counts).
    """
    if window_s <= 0 or baseline_s <= 0:
        raise ValueError(f"--window and --baseline: must be > 0, got {window_s}s and {baseline_s}s")
    if not 0 < p <= 1:
        raise ValueError(f"--p: must be in (0, 1], got {p}")
    w_to = int(end_s)
    b_to = int(w_to - window_s if baseline_end_s is None else baseline_end_s)
    sql = pattern_diff_sql("toDateTime({wf:UInt32})", "toDateTime({wt:UInt32})", "toDateTime({bf:UInt32})",
                           "toDateTime({bt:UInt32})", "({service:String} = '' OR ServiceName = {service:String})")
    return store.query_rows(sql, {"wf": w_to - window_s, "wt": w_to, "bf": b_to - baseline_s, "bt": b_to,
                                  "service": service, "p": p, "limit": check_limit(limit)})


def anomalies(store: Store, *, service: str = "", kind: str = "", since_s: int = 0,
              limit: int = DEFAULT_LIMIT) -> Rows:
    """The latest anomalies (findings of the ``anomaly`` processor), newest first.

    Columns: time (bucket start), service, kind, severity, score, observed, expected, lower, upper,
    series, resolution_s, pattern_id, description, explanation (the attribute values and patterns that
    carry it: ``k8s.pod.name=pod-2 96% vs 25% (x3.8, p=1e-30)``, most significant first).
    """
    sql = f"""
        SELECT {_TIME.format(col='Timestamp')} AS time, ServiceName AS service, Kind AS kind,
               Severity AS severity, round(toFloat64(Score), 3) AS score, round(Observed, 3) AS observed,
               round(Expected, 3) AS expected, round(Lower, 3) AS lower, round(Upper, 3) AS upper,
               Series AS series, ResolutionSeconds AS resolution_s,
               if(PatternId = 0, '', {_HEX_ID.format(col='PatternId')}) AS pattern_id, Description AS description,
               {_EXPLANATION} AS explanation
        FROM anomalies
        WHERE ({{service:String}} = '' OR ServiceName = {{service:String}})
          AND ({{kind:String}} = '' OR Kind = {{kind:String}})
          AND ({{since:UInt32}} = 0 OR Timestamp >= now() - toIntervalSecond({{since:UInt32}}))
        ORDER BY Timestamp DESC, service, kind
        LIMIT {{limit:UInt32}}"""
    return store.query_rows(sql, {"service": service, "kind": kind, "since": since_s, "limit": check_limit(limit)})


def incidents(store: Store, *, service: str = "", since_s: int = 0, limit: int = DEFAULT_LIMIT) -> Rows:
    """Incidents across services (the ``incidents`` table, latest version of each), newest first.

    Columns: incident (the ``incident`` label of its findings and alerts), start, origin (probable),
    chain (services from the origin on, with onset time and first finding kind), services, findings,
    severity, why (how the origin was chosen).
    """
    sql = f"""
        SELECT IncidentId AS incident, {_TIME.format(col='Start')} AS start, Origin AS origin,
               arrayStringConcat(arrayMap(c -> concat(tupleElement(c, 'Service'), ' (',
                   formatDateTime(tupleElement(c, 'Onset'), '%T'), ' ', tupleElement(c, 'FirstKind'), ')'), Chain),
                   ' -> ') AS chain,
               length(Services) AS services, Findings AS findings, Severity AS severity, OriginReason AS why
        FROM incidents FINAL
        WHERE ({{service:String}} = '' OR has(Services, {{service:String}}))
          AND ({{since:UInt32}} = 0 OR Start >= now() - toIntervalSecond({{since:UInt32}}))
        ORDER BY Start DESC, incident
        LIMIT {{limit:UInt32}}"""
    return store.query_rows(sql, {"service": service, "since": since_s, "limit": check_limit(limit)})


def alerts(store: Store, *, service: str = "", outcome: str = "", since_s: int = 0,
           limit: int = DEFAULT_LIMIT) -> Rows:
    """Alert notifications (sent, failed or dropped) and where they went, newest first.

    Columns: time, alert, status, severity, service, receiver, integration, outcome, attempts,
    latency_ms, summary, error.
    """
    sql = f"""
        SELECT {_TIME.format(col='Timestamp')} AS time, AlertName AS alert, Status AS status,
               Severity AS severity, ServiceName AS service, Receiver AS receiver, Integration AS integration,
               Outcome AS outcome, Attempts AS attempts, round(LatencyMs, 1) AS latency_ms,
               Annotations['summary'] AS summary, Error AS error
        FROM alerts
        WHERE ({{service:String}} = '' OR ServiceName = {{service:String}})
          AND ({{outcome:String}} = '' OR Outcome = {{outcome:String}})
          AND ({{since:UInt32}} = 0 OR Timestamp >= now() - toIntervalSecond({{since:UInt32}}))
        ORDER BY Timestamp DESC, alert, receiver
        LIMIT {{limit:UInt32}}"""
    return store.query_rows(sql, {"service": service, "outcome": outcome, "since": since_s, "limit": check_limit(limit)})


def tail(store: Store, *, pattern_id: int | None = None, service: str = "", since_s: int = 0,
         limit: int = DEFAULT_LIMIT) -> Rows:
    """The last ``limit`` log lines (optionally of one pattern or service), oldest of them first.

    Columns: time, service, severity, pattern_id, anomaly_score, body.
    """
    sql = f"""
        SELECT time, service, severity, pattern_id, anomaly_score, body FROM (
            SELECT Timestamp AS ts, formatDateTime(Timestamp, '%F %T.%f') AS time, ServiceName AS service,
                   SeverityText AS severity, {_HEX_ID.format(col='PatternId')} AS pattern_id,
                   round(toFloat64(AnomalyScore), 3) AS anomaly_score, Body AS body
            FROM otel_logs
            WHERE ({{service:String}} = '' OR ServiceName = {{service:String}})
              AND ({{any_pattern:UInt8}} = 1 OR PatternId = {{pattern:UInt64}})
              AND ({{since:UInt32}} = 0 OR Timestamp >= now() - toIntervalSecond({{since:UInt32}}))
            ORDER BY Timestamp DESC
            LIMIT {{limit:UInt32}})
        ORDER BY ts"""
    return store.query_rows(sql, {"service": service, "any_pattern": int(pattern_id is None),
                                  "pattern": pattern_id or 0, "since": since_s, "limit": check_limit(limit)})


def incident_evidence(store: Store, service: str, kinds: Iterable[str], start_ns: int, end_ns: int,
                      before_s: float = 60.0, grace_s: float = 600.0) -> dict[str, Any]:
    """What the store holds about one incident: anomalies of ``kinds`` for ``service`` and the
    firing alert notifications sent about it, both in [start - before_s, end + grace_s] of event time.

    Returns {"anomalies": int, "first_detection": str ('' if none), "alerts": int, "receivers": [str]}.
    """
    params = {"service": service, "kinds": ",".join(kinds), "lo": int(start_ns - before_s * 1e9),
              "hi": int(end_ns + grace_s * 1e9)}
    n, first = store.query_rows(
        "SELECT count(), if(count() = 0, '', formatDateTime(min(Timestamp), '%F %T')) FROM anomalies "
        "WHERE ServiceName = {service:String} AND has(splitByChar(',', {kinds:String}), Kind) "
        "AND Timestamp BETWEEN fromUnixTimestamp64Nano({lo:Int64}) AND fromUnixTimestamp64Nano({hi:Int64})",
        params)[0]
    sent, receivers = store.query_rows(
        "SELECT count(), arraySort(groupUniqArray(Receiver)) FROM alerts "
        "WHERE ServiceName = {service:String} AND Outcome = 'sent' AND Status = 'firing' "
        "AND EventTime BETWEEN fromUnixTimestamp64Nano({lo:Int64}) AND fromUnixTimestamp64Nano({hi:Int64})",
        params)[0]
    return {"anomalies": int(n), "first_detection": first, "alerts": int(sent), "receivers": list(receivers)}
