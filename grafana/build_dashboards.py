"""Build otelproc's Grafana dashboards as code and write them to ``grafana/dashboards/*.json`` and to
the package (``otelproc/defaults/dashboards/*.json``, which ``otelproc report`` draws).

    python grafana/build_dashboards.py            # regenerate the JSON files
    python grafana/build_dashboards.py --check    # exit 1 if a committed file differs

A small builder of Grafana's dashboard JSON (schemaVersion 39, Grafana 10.4/11), no dependency.
Every query targets the provisioned ClickHouse data source (uid ``otelproc-ch``, plugin
``grafana-clickhouse-datasource``) and the tables of ``otelproc/store/sql/``; the default database
comes from the data source, so table names are unqualified. tests/unit/test_dashboards.py expands
the plugin macros and runs every query on chDB loaded by a demo run.

Pattern ids are UInt64, beyond JavaScript's 2^53: they travel through Grafana as decimal
strings (``toString(PatternId)``) and come back in filters as ``PatternId IN ('123', ...)``,
which ClickHouse converts exactly.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# the pattern diff panel runs the query of `otelproc patterns diff` (one definition of the diff)
from otelproc.views import pattern_diff_sql  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
PACKAGED_DIR = Path(__file__).resolve().parents[1] / "otelproc" / "defaults" / "dashboards"
DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "otelproc-ch"}
SCHEMA_VERSION = 39
TAGS = ["otelproc"]

# sqlds FormatQueryOption of the ClickHouse plugin
FORMAT_TIME_SERIES, FORMAT_TABLE, FORMAT_LOGS = 0, 1, 2
_QUERY_TYPE = {FORMAT_TIME_SERIES: "timeseries", FORMAT_TABLE: "table", FORMAT_LOGS: "logs"}

ERROR = 17  # SeverityNumber of ERROR (OTLP): 17-24 are error and fatal


# --------------------------------------------------------------------------- builder

def target(sql: str, fmt: int = FORMAT_TABLE, ref: str = "A") -> dict[str, Any]:
    """One ClickHouse plugin query (SQL editor mode)."""
    return {"refId": ref, "datasource": dict(DATASOURCE), "editorType": "sql", "format": fmt,
            "queryType": _QUERY_TYPE[fmt], "rawSql": " ".join(sql.split()), "pluginVersion": "4.0.0"}


class Dashboard:
    """Collects panels and lays them out left to right, top to bottom, on Grafana's 24-column grid."""

    def __init__(self, uid: str, title: str, description: str, time_from: str = "now-6h"):
        self.uid, self.title, self.description, self.time_from = uid, title, description, time_from
        self.panels: list[dict[str, Any]] = []
        self.variables: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.links: list[dict[str, Any]] = []
        self._x = self._y = self._row_h = 0
        self._next_id = 1

    def _place(self, w: int, h: int) -> dict[str, int]:
        if self._x + w > 24:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        pos = {"x": self._x, "y": self._y, "w": w, "h": h}
        self._x += w
        self._row_h = max(self._row_h, h)
        return pos

    def row(self, title: str) -> "Dashboard":
        if self._x:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        self.panels.append({"id": self._next_id, "type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"x": 0, "y": self._y, "w": 24, "h": 1}})
        self._next_id += 1
        self._y += 1
        return self

    def panel(self, ptype: str, title: str, sql: str, fmt: int, *, w: int = 12, h: int = 8,
              description: str = "", unit: str = "", options: dict | None = None, custom: dict | None = None,
              overrides: list | None = None, links: list | None = None, repeat: str = "",
              transformations: list | None = None) -> "Dashboard":
        defaults: dict[str, Any] = {}
        if unit:
            defaults["unit"] = unit
        if custom:
            defaults["custom"] = custom
        if links:
            defaults["links"] = links
        p: dict[str, Any] = {
            "id": self._next_id, "type": ptype, "title": title, "description": description,
            "datasource": dict(DATASOURCE), "gridPos": self._place(w, h),
            "targets": [target(sql, fmt)],
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": options or {},
        }
        if repeat:
            p["repeat"], p["repeatDirection"], p["maxPerRow"] = repeat, "h", 2
        if transformations:
            p["transformations"] = transformations
        self.panels.append(p)
        self._next_id += 1
        return self

    def query_variable(self, name: str, label: str, sql: str, *, multi: bool = False, include_all: bool = False,
                       refresh: int = 2) -> "Dashboard":
        """A query variable; ``refresh`` 2 = on time range change (1 = on dashboard load)."""
        sql = " ".join(sql.split())
        current = {"selected": True, "text": ["All"], "value": ["$__all"]} if include_all else {}
        self.variables.append({
            "type": "query", "name": name, "label": label, "datasource": dict(DATASOURCE),
            "query": {"refId": f"var-{name}", "editorType": "sql", "format": FORMAT_TABLE, "queryType": "table",
                      "rawSql": sql},
            "definition": sql, "refresh": refresh, "multi": multi, "includeAll": include_all,
            "current": current, "options": [], "sort": 1, "hide": 0, "skipUrlSync": False,
        })
        return self

    def annotation(self, name: str, sql: str, color: str = "red", panels: tuple[str, ...] = ()) -> "Dashboard":
        """A dashboard annotation from SQL (columns time, timeEnd, title, text, tags); shown on every
        time series panel, or only on the panels titled in ``panels``."""
        self.annotations.append({"name": name, "enable": True, "hide": False, "iconColor": color,
                                 "datasource": dict(DATASOURCE), "target": target(sql, FORMAT_TABLE, "Anno"),
                                 "_panels": panels})
        return self

    def _annotations_json(self) -> list[dict[str, Any]]:
        ids = {p["title"]: p["id"] for p in self.panels}
        out = []
        for a in self.annotations:
            a = dict(a)
            titles = a.pop("_panels")
            missing = [t for t in titles if t not in ids]
            if missing:
                raise ValueError(f"{self.uid}: annotation {a['name']!r} names unknown panels {missing}")
            if titles:
                a["filter"] = {"exclude": False, "ids": [ids[t] for t in titles]}
            out.append(a)
        return out

    def to_json(self) -> dict[str, Any]:
        builtin = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                   "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                   "type": "dashboard"}
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "tags": TAGS,
            "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": False, "graphTooltip": 1,
            "timezone": "utc", "refresh": "30s", "time": {"from": self.time_from, "to": "now"},
            "timepicker": {}, "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
            "annotations": {"list": [builtin, *self._annotations_json()]},
            "templating": {"list": self.variables},
            "links": self.links or [{"type": "dashboards", "tags": TAGS, "asDropdown": True, "title": "otelproc",
                                     "includeVars": False, "keepTime": True, "icon": "external link",
                                     "targetBlank": False, "tooltip": "", "url": ""}],
            "panels": self.panels,
        }


def _ts(bars: bool = False, stack: bool = False) -> dict[str, Any]:
    c: dict[str, Any] = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 30 if bars else 10,
                         "showPoints": "never", "spanNulls": False}
    if stack:
        c["stacking"] = {"mode": "normal", "group": "A"}
    return c


_LEGEND = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
           "tooltip": {"mode": "multi", "sort": "desc"}}
_STAT = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "value",
         "graphMode": "none", "justifyMode": "auto", "textMode": "auto", "orientation": "auto"}
_LOGS = {"showTime": True, "wrapLogMessage": True, "sortOrder": "Descending", "enableLogDetails": True,
         "dedupStrategy": "none", "prettifyLogMessage": False, "showCommonLabels": False, "showLabels": False}


def _link(title: str, url: str) -> dict[str, Any]:
    return {"title": title, "url": url, "targetBlank": False}


# Reused SQL fragments
_TEMPLATES = "(SELECT ServiceName, PatternId, any(Template) AS template FROM log_patterns GROUP BY ServiceName, PatternId)"
# otel_logs is partitioned by toDate(TimestampTime) with primary key (ServiceName, TimestampTime): a filter on
# Timestamp alone prunes neither, so every otel_logs query also filters TimestampTime (whole seconds, so the
# TimestampTime condition keeps every row the Timestamp condition keeps).
_LOGS_TIME = "$__timeFilter(TimestampTime) AND $__timeFilter(Timestamp)"
# newest lines first: TimestampTime is the whole second of Timestamp, so this is ORDER BY Timestamp DESC,
# but sorted on a key column first
_NEWEST_FIRST = "TimestampTime DESC, Timestamp DESC"
# The overview's counts come from pattern_counts (lines per minute, service, pattern and severity, written by
# the patterns processor for every line): 20-50x fewer rows than otel_logs, for the dashboard opened most.
_FROM_COUNTS = "Counted per minute by the patterns processor (pattern_counts), not by scanning otel_logs."
_SERVICE_FILTER = "$__conditionalAll(ServiceName IN (${service:singlequote}), $service)"
_PATTERN_FILTER = "$__conditionalAll(PatternId IN (${pattern:singlequote}), $pattern)"
_SEVERITY_FILTER = "$__conditionalAll(SeverityNumber IN (${severity:csv}), $severity)"
# variables read the small per-minute table, never otel_logs
_SERVICE_VAR_SQL = "SELECT DISTINCT ServiceName FROM pattern_counts WHERE $__timeFilter(Minute) ORDER BY ServiceName"
# OTLP short names of SeverityNumber 1-24 (TRACE, TRACE2, ..., FATAL4); 0 is unspecified
_SEVERITY_NAME = ("if(SeverityNumber = 0, 'UNSPECIFIED', concat(['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL']"
                  "[intDiv(SeverityNumber - 1, 4) + 1], if((SeverityNumber - 1) % 4 = 0, '', "
                  "toString((SeverityNumber - 1) % 4 + 1))))")
_TO_SERVICE = "/d/otelproc-service/service-drill-down?var-service=${__data.fields.service}" \
              "&var-pattern=${__data.fields.pattern_id}&${__url_time_range}"
_TO_PATTERN = "/d/otelproc-patterns/otelproc-patterns?var-service=${__data.fields.service}&var-pattern=${__value.raw}" \
              "&${__url_time_range}"
# an anomaly's logs: the service's drill-down from 15 minutes before its bucket to 15 minutes after it
_ANOMALY_WINDOW = ("toUnixTimestamp64Milli(Timestamp) - 900000 AS from_ms, "
                   "toUnixTimestamp64Milli(Timestamp) + toInt64(1000 * ResolutionSeconds) + 900000 AS to_ms")
_TO_ANOMALY_LOGS = "/d/otelproc-service/service-drill-down?var-service=${__data.fields.service}" \
                   "&from=${__data.fields.from_ms}&to=${__data.fields.to_ms}"
_ANOMALY_ANNOTATION = ("SELECT Timestamp AS time, Timestamp + toIntervalMillisecond(toInt64(1000 * ResolutionSeconds)) "
                       "AS timeEnd, concat(Kind, ' · ', ServiceName) AS title, Description AS text, "
                       "[Kind, Severity] AS tags FROM anomalies WHERE $__timeFilter(Timestamp) AND {where} "
                       "ORDER BY Timestamp LIMIT 500")
_HIDE_WINDOW = [{"matcher": {"id": "byName", "options": c}, "properties": [{"id": "custom.hidden", "value": True}]}
                for c in ("from_ms", "to_ms")]
_PATTERN_LINK = [{"matcher": {"id": "byName", "options": "pattern_id"},
                  "properties": [{"id": "links", "value": [_link("Pattern of this line", _TO_PATTERN)]}]}]


# --------------------------------------------------------------------------- dashboards

def overview() -> Dashboard:
    d = Dashboard("otelproc-overview", "otelproc · Overview",
                  "What the logs are doing: ingest, errors, patterns, anomalies and alerts at a glance.")
    d.row("Now")
    d.panel("stat", "Log lines", "SELECT sum(Count) AS lines FROM pattern_counts WHERE $__timeFilter(Minute)",
            FORMAT_TABLE, w=6, h=4, unit="short", options=_STAT, description=_FROM_COUNTS)
    d.panel("stat", "Error ratio", f"SELECT sumIf(Count, SeverityNumber >= {ERROR}) / greatest(sum(Count), 1) "
            "AS error_ratio FROM pattern_counts WHERE $__timeFilter(Minute)", FORMAT_TABLE, w=6, h=4,
            unit="percentunit", options=_STAT, description=_FROM_COUNTS)
    d.panel("stat", "Patterns seen", "SELECT uniqExact(ServiceName, PatternId) AS patterns FROM pattern_counts "
            "WHERE $__timeFilter(Minute)", FORMAT_TABLE, w=6, h=4, unit="short", options=_STAT)
    d.panel("stat", "Firing alerts",
            "SELECT count() AS firing FROM (SELECT Fingerprint, argMax(Status, Timestamp) AS status FROM alerts "
            "WHERE Timestamp <= $__toTime AND Timestamp >= $__toTime - INTERVAL 1 DAY AND Outcome = 'sent' "
            "GROUP BY Fingerprint) WHERE status = 'firing'", FORMAT_TABLE, w=6, h=4, unit="short", options=_STAT,
            description="Alerts whose last notification in the day before the end of the range was 'firing'.")
    d.row("Traffic and errors")
    d.panel("timeseries", "Ingest rate by service",
            "SELECT $__timeInterval(Minute) AS time, ServiceName, sum(Count) / greatest($__interval_s, 60) "
            "AS lines_per_s FROM pattern_counts WHERE $__timeFilter(Minute) GROUP BY time, ServiceName ORDER BY time",
            FORMAT_TIME_SERIES, unit="short", custom=_ts(stack=True), options=_LEGEND,
            description="Log lines per second, by event time (per minute at least). " + _FROM_COUNTS)
    d.panel("timeseries", "Error ratio by service",
            f"SELECT $__timeInterval(Minute) AS time, ServiceName, sumIf(Count, SeverityNumber >= {ERROR}) / sum(Count) "
            "AS error_ratio FROM pattern_counts WHERE $__timeFilter(Minute) GROUP BY time, ServiceName ORDER BY time",
            FORMAT_TIME_SERIES, unit="percentunit", custom=_ts(), options=_LEGEND, description=_FROM_COUNTS)
    d.row("Patterns")
    d.panel("table", "Top patterns",
            f"SELECT c.ServiceName AS service, toString(c.PatternId) AS pattern_id, t.template AS template, "
            f"c.lines AS lines, c.errors AS errors FROM (SELECT ServiceName, PatternId, sum(Count) AS lines, "
            f"sumIf(Count, SeverityNumber >= {ERROR}) AS errors FROM pattern_counts WHERE $__timeFilter(Minute) "
            f"GROUP BY ServiceName, PatternId) AS c LEFT JOIN {_TEMPLATES} AS t "
            "ON c.ServiceName = t.ServiceName AND c.PatternId = t.PatternId ORDER BY lines DESC LIMIT 20",
            FORMAT_TABLE, links=[_link("Drill down", _TO_SERVICE)])
    d.panel("table", "New patterns",
            "SELECT ServiceName AS service, toString(PatternId) AS pattern_id, any(Template) AS template, "
            "min(FirstSeen) AS first_seen, sum(Count) AS lines, sum(CountError) AS errors FROM log_patterns "
            "GROUP BY ServiceName, PatternId HAVING first_seen >= $__fromTime AND first_seen <= $__toTime "
            "ORDER BY first_seen DESC LIMIT 50", FORMAT_TABLE, links=[_link("Drill down", _TO_SERVICE)],
            description="Patterns first seen in the time range, newest first.")
    d.row("Anomalies and alerts")
    d.panel("timeseries", "Anomaly timeline",
            "SELECT $__timeInterval(Timestamp) AS time, Kind, count() AS findings FROM anomalies "
            "WHERE $__timeFilter(Timestamp) GROUP BY time, Kind ORDER BY time", FORMAT_TIME_SERIES,
            custom=_ts(bars=True, stack=True), options=_LEGEND, unit="short")
    d.panel("table", "Active alerts",
            "SELECT AlertName AS alert, ServiceName AS service, Severity AS severity, min(StartsAt) AS since, "
            "argMax(Annotations['summary'], Timestamp) AS summary FROM alerts "
            "WHERE Timestamp <= $__toTime AND Timestamp >= $__toTime - INTERVAL 1 DAY AND Outcome = 'sent' "
            "GROUP BY Fingerprint, AlertName, ServiceName, Severity HAVING argMax(Status, Timestamp) = 'firing' "
            "ORDER BY since DESC", FORMAT_TABLE)
    d.annotation("Anomalies", _ANOMALY_ANNOTATION.format(where="1=1"), panels=("Ingest rate by service",))
    return d


def patterns() -> Dashboard:
    d = Dashboard("otelproc-patterns", "otelproc · Patterns",
                  "Log templates mined by the patterns processor: volume, trend, first/last seen, share by "
                  "service, and the logs behind each pattern.")
    d.query_variable("service", "Service", _SERVICE_VAR_SQL, multi=True, include_all=True)
    d.query_variable("pattern", "Pattern",
                     "SELECT toString(PatternId) AS __value, concat(ServiceName, ': ', substring(any(Template), 1, 80)) "
                     f"AS __text FROM log_patterns WHERE {_SERVICE_FILTER} GROUP BY ServiceName, PatternId "
                     "ORDER BY sum(Count) DESC LIMIT 500", include_all=True)
    d.panel("table", "Templates",
            "SELECT c.ServiceName AS service, toString(c.PatternId) AS pattern_id, p.template AS template, "
            "c.lines AS lines, round(100 * c.lines / sum(c.lines) OVER (PARTITION BY c.ServiceName), 2) "
            "AS share_of_service_pct, c.errors AS errors, p.first_seen AS first_seen, p.last_seen AS last_seen "
            f"FROM (SELECT ServiceName, PatternId, sum(Count) AS lines, sumIf(Count, SeverityNumber >= {ERROR}) "
            "AS errors FROM pattern_counts WHERE $__timeFilter(Minute) AND "
            f"{_SERVICE_FILTER} GROUP BY ServiceName, PatternId) AS c "
            "LEFT JOIN (SELECT ServiceName, PatternId, any(Template) AS template, min(FirstSeen) AS first_seen, "
            "max(LastSeen) AS last_seen FROM log_patterns GROUP BY ServiceName, PatternId) AS p "
            "ON c.ServiceName = p.ServiceName AND c.PatternId = p.PatternId ORDER BY lines DESC LIMIT 200",
            FORMAT_TABLE, w=24, h=10, links=[_link("Logs of this pattern", _TO_SERVICE)],
            overrides=[{"matcher": {"id": "byName", "options": "share_of_service_pct"},
                        "properties": [{"id": "custom.cellOptions", "value": {"type": "gauge", "mode": "basic"}},
                                       {"id": "max", "value": 100}]}])
    d.panel("stat", "Top patterns over time",
            "SELECT $__timeInterval(c.Minute) AS time, concat(c.ServiceName, ': ', substring(t.template, 1, 50)) "
            "AS pattern, sum(c.Count) AS lines FROM pattern_counts AS c INNER JOIN "
            "(SELECT ServiceName, PatternId FROM pattern_counts WHERE $__timeFilter(Minute) AND "
            f"{_SERVICE_FILTER} GROUP BY ServiceName, PatternId ORDER BY sum(Count) DESC LIMIT 12) AS top "
            f"ON c.ServiceName = top.ServiceName AND c.PatternId = top.PatternId LEFT JOIN {_TEMPLATES} AS t "
            "ON c.ServiceName = t.ServiceName AND c.PatternId = t.PatternId WHERE $__timeFilter(c.Minute) "
            "GROUP BY time, pattern ORDER BY time", FORMAT_TIME_SERIES, w=16, h=10, unit="short",
            options={**_STAT, "graphMode": "area", "reduceOptions": {"calcs": ["sum"], "fields": "",
                                                                     "values": False}},
            description="One tile per pattern: lines in the range and a sparkline of its rate.")
    d.panel("piechart", "Share by service",
            "SELECT ServiceName AS service, sum(Count) AS lines FROM pattern_counts WHERE $__timeFilter(Minute) "
            f"AND {_SERVICE_FILTER} AND {_PATTERN_FILTER} GROUP BY service ORDER BY lines DESC", FORMAT_TABLE,
            w=8, h=10, options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
                                "pieType": "donut", "legend": {"displayMode": "table", "placement": "right",
                                                               "showLegend": True, "values": ["percent"]}})
    d.panel("table", "Pattern diff: this range against the day before it",
            pattern_diff_sql("$__fromTime", "$__toTime", "$__fromTime - toIntervalDay(1)", "$__fromTime",
                             where=_SERVICE_FILTER, p_max="0.001", limit="200"), FORMAT_TABLE, w=24, h=10,
            links=[_link("Logs of this pattern", _TO_SERVICE)],
            description="New, gone and shifted patterns per service (otelproc patterns diff): lines and share of "
                        "the service's lines in the dashboard's range (window) and in the 24 h before it "
                        "(baseline), lift, and log10 p (Chernoff bound on the binomial tail, Bonferroni-adjusted "
                        "for the service's patterns); rows with p <= 0.001, most significant first.")
    d.panel("logs", "Logs of the selected pattern",
            "SELECT Timestamp AS timestamp, Body AS body, SeverityText AS level, ServiceName AS service, "
            f"toString(PatternId) AS pattern_id FROM otel_logs WHERE {_LOGS_TIME} AND "
            f"{_SERVICE_FILTER} AND {_PATTERN_FILTER} ORDER BY {_NEWEST_FIRST} LIMIT 1000", FORMAT_LOGS,
            w=24, h=12, options=_LOGS, overrides=_PATTERN_LINK)
    return d


def anomalies() -> Dashboard:
    d = Dashboard("otelproc-anomalies", "otelproc · Anomalies & trends",
                  "Each series with its expected band, anomaly markers, and trend slopes with time-to-breach "
                  "forecasts.")
    d.query_variable("service", "Service", _SERVICE_VAR_SQL, multi=True, include_all=True)
    d.query_variable("series", "Series",
                     "SELECT DISTINCT Series FROM series WHERE PatternId = 0 AND $__timeFilter(Timestamp) "
                     "ORDER BY Series")
    d.annotation("Anomalies", _ANOMALY_ANNOTATION.format(where=_SERVICE_FILTER))
    d.panel("timeseries", "${series}: ${service}",
            "SELECT Timestamp AS time, Observed AS observed, Expected AS expected, Lower AS lower, Upper AS upper "
            "FROM series WHERE $__timeFilter(Timestamp) AND Series = '${series}' AND PatternId = 0 AND "
            "ServiceName = '${service}' ORDER BY time", FORMAT_TIME_SERIES, repeat="service",
            custom=_ts(), options=_LEGEND,
            overrides=[{"matcher": {"id": "byName", "options": "upper"},
                        "properties": [{"id": "custom.fillBelowTo", "value": "lower"},
                                       {"id": "custom.lineWidth", "value": 0},
                                       {"id": "color", "value": {"mode": "fixed", "fixedColor": "#8AB8FF"}}]},
                       {"matcher": {"id": "byName", "options": "lower"},
                        "properties": [{"id": "custom.lineWidth", "value": 0},
                                       {"id": "color", "value": {"mode": "fixed", "fixedColor": "#8AB8FF"}}]},
                       {"matcher": {"id": "byName", "options": "expected"},
                        "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}]}],
            description="Observed value, expected value and band per closed bucket; anomaly markers are the "
                        "dashboard annotations.")
    d.row("Findings")
    d.panel("timeseries", "Anomaly score by service",
            "SELECT $__timeInterval(Timestamp) AS time, ServiceName, max(Score) AS score FROM anomalies WHERE "
            f"$__timeFilter(Timestamp) AND {_SERVICE_FILTER} GROUP BY time, ServiceName ORDER BY time",
            FORMAT_TIME_SERIES, custom=_ts(bars=True), options=_LEGEND)
    d.panel("table", "Anomalies",
            "SELECT Timestamp AS time, ServiceName AS service, Kind AS kind, Severity AS severity, "
            "round(Score, 3) AS score, Series AS series, round(Observed, 4) AS observed, "
            f"round(Expected, 4) AS expected, Description AS description, {_ANOMALY_WINDOW} FROM anomalies "
            f"WHERE $__timeFilter(Timestamp) AND {_SERVICE_FILTER} ORDER BY Timestamp DESC LIMIT 500", FORMAT_TABLE,
            links=[_link("Logs around this anomaly", _TO_ANOMALY_LOGS)], overrides=_HIDE_WINDOW)
    d.panel("table", "What carries the anomalies",
            "SELECT Timestamp AS time, ServiceName AS service, Kind AS kind, "
            "if(tupleElement(e, 'Attribute') = 'log.pattern.id', 'pattern', tupleElement(e, 'Attribute')) AS attribute, "
            "tupleElement(e, 'Value') AS value, tupleElement(e, 'Population') AS of, "
            "round(100 * tupleElement(e, 'Share'), 1) AS pct_now, round(100 * tupleElement(e, 'BaselineShare'), 1) "
            "AS pct_before, round(tupleElement(e, 'Lift'), 2) AS lift, round(tupleElement(e, 'Log10P'), 1) AS log10_p, "
            "arrayStringConcat(tupleElement(e, 'Also'), ', ') AS also, "
            f"{_ANOMALY_WINDOW} FROM anomalies ARRAY JOIN Explanation AS e "
            f"WHERE $__timeFilter(Timestamp) AND {_SERVICE_FILTER} ORDER BY Timestamp DESC, log10_p LIMIT 500",
            FORMAT_TABLE, links=[_link("Logs around this anomaly", _TO_ANOMALY_LOGS)], overrides=_HIDE_WINDOW,
            description="The attribute values (resource and log attributes) and patterns whose share of the "
                        "anomaly's lines (of: errors, pattern errors, lines) in its bucket differs most from before "
                        "(pct_now vs pct_before, lift, Bonferroni-adjusted log10 p; also: values on the same lines, "
                        "e.g. a pod's host). Computed at ingest by the anomaly processor (explain).")
    d.panel("table", "Incidents across services",
            "SELECT IncidentId AS incident, Start AS start, Origin AS origin, "
            "arrayStringConcat(arrayMap(c -> concat(tupleElement(c, 'Service'), ' (', "
            "formatDateTime(tupleElement(c, 'Onset'), '%T'), ')'), Chain), ' -> ') AS chain, Findings AS findings, "
            "Severity AS severity, OriginReason AS why FROM incidents FINAL WHERE $__timeFilter(Start) AND "
            "$__conditionalAll(hasAny(Services, [${service:singlequote}]), $service) ORDER BY Start DESC LIMIT 200",
            FORMAT_TABLE, w=24, h=8,
            description="Findings of several services close in time grouped into one incident (its id is the "
                        "alerts' incident label: one notification group per incident): the probable origin "
                        "(earliest onset; among services within 2 minutes of it, the one the others call) and the "
                        "chain of services it reached, with onsets.")
    d.row("Trends")
    d.panel("table", "Trend slopes and time to breach",
            "SELECT ServiceName AS service, Series AS series, toString(PatternId) AS pattern_id, "
            # x in seconds since the range start: raw epoch seconds (~1.8e9, squares ~3e18) lose the slope's
            # digits in Float64 sums, so the result changed with the engine's summation order between runs
            "round(3600 * tupleElement(simpleLinearRegression(toFloat64(toUnixTimestamp(Timestamp) - "
            "toUnixTimestamp($__fromTime)), Observed), 1), 4) "
            "AS slope_per_hour, round(100 * slope_per_hour / greatest(abs(argMin(Observed, Timestamp)), 1e-9), 2) "
            "AS slope_pct_per_hour, argMax(Observed, Timestamp) AS last_value, argMax(Upper, Timestamp) AS upper_band, "
            "if(slope_per_hour > 0 AND upper_band > last_value, round((upper_band - last_value) / slope_per_hour, 1), "
            "NULL) AS hours_to_breach FROM series WHERE $__timeFilter(Timestamp) AND isFinite(Observed) AND "
            f"isFinite(Upper) AND {_SERVICE_FILTER} GROUP BY service, series, pattern_id HAVING count() >= 8 "
            "ORDER BY slope_pct_per_hour DESC LIMIT 30", FORMAT_TABLE, w=14, h=10,
            description="Least-squares slope of each series over the range; hours_to_breach: when the trend "
                        "line reaches the current upper band at this rate (empty when flat or falling).")
    d.panel("table", "Trend findings",
            "SELECT Timestamp AS time, ServiceName AS service, toString(PatternId) AS pattern_id, "
            "toFloat64OrNull(Labels['slope_pct_per_hour']) AS pct_per_hour, "
            "toFloat64OrNull(Labels['hours_to_threshold']) AS hours_to_threshold, "
            "toFloat64OrNull(Labels['ramp_minutes']) AS ramp_minutes, "
            "round(Observed, 2) AS now_value, Template AS template FROM anomalies WHERE Kind = 'trend' AND "
            f"$__timeFilter(Timestamp) AND {_SERVICE_FILTER} ORDER BY Timestamp DESC LIMIT 100", FORMAT_TABLE,
            w=10, h=10, description="Creep findings of the anomaly processor (ramp test on log latency): "
                                    "slope in %/hour, hours until 2x the pre-ramp level at this rate (inf when "
                                    "not rising), minutes since the ramp started.")
    return d


def service() -> Dashboard:
    d = Dashboard("otelproc-service", "otelproc · Service drill-down",
                  "One service: its traffic by severity, patterns, anomalies and logs, filtered by "
                  "$pattern and $severity.")
    d.query_variable("service", "Service", _SERVICE_VAR_SQL)
    d.query_variable("severity", "Severity",
                     f"SELECT DISTINCT SeverityNumber AS __value, {_SEVERITY_NAME} AS __text FROM pattern_counts "
                     "WHERE ServiceName = '${service}' AND $__timeFilter(Minute) ORDER BY __value",
                     multi=True, include_all=True)
    d.query_variable("pattern", "Pattern",
                     "SELECT toString(PatternId) AS __value, substring(any(Template), 1, 100) AS __text "
                     "FROM log_patterns WHERE ServiceName = '${service}' GROUP BY PatternId "
                     "ORDER BY sum(Count) DESC LIMIT 500", include_all=True)
    d.panel("timeseries", "Lines by severity",
            "SELECT $__timeInterval(Timestamp) AS time, SeverityText, count() / $__interval_s AS lines_per_s "
            f"FROM otel_logs WHERE {_LOGS_TIME} AND ServiceName = '${{service}}' AND {_PATTERN_FILTER} "
            f"AND {_SEVERITY_FILTER} GROUP BY time, SeverityText ORDER BY time", FORMAT_TIME_SERIES,
            custom=_ts(stack=True), options=_LEGEND, unit="short")
    d.panel("timeseries", "Log volume and expected band",
            "SELECT Timestamp AS time, Observed AS observed, Expected AS expected, Lower AS lower, Upper AS upper "
            "FROM series WHERE $__timeFilter(Timestamp) AND Series = 'log_count' AND PatternId = 0 AND "
            "ServiceName = '${service}' ORDER BY time", FORMAT_TIME_SERIES, custom=_ts(), options=_LEGEND,
            overrides=[{"matcher": {"id": "byName", "options": "upper"},
                        "properties": [{"id": "custom.fillBelowTo", "value": "lower"},
                                       {"id": "custom.lineWidth", "value": 0}]},
                       {"matcher": {"id": "byName", "options": "lower"},
                        "properties": [{"id": "custom.lineWidth", "value": 0}]}])
    d.panel("table", "Patterns of the service",
            "SELECT toString(c.PatternId) AS pattern_id, t.template AS template, c.lines AS lines, "
            "c.errors AS errors, '${service}' AS service FROM (SELECT PatternId, sum(Count) AS lines, "
            f"sumIf(Count, SeverityNumber >= {ERROR}) AS errors FROM pattern_counts WHERE $__timeFilter(Minute) AND "
            f"ServiceName = '${{service}}' AND {_PATTERN_FILTER} AND {_SEVERITY_FILTER} GROUP BY PatternId) AS c "
            "LEFT JOIN "
            f"(SELECT PatternId, any(Template) AS template FROM log_patterns WHERE ServiceName = '${{service}}' "
            "GROUP BY PatternId) AS t ON c.PatternId = t.PatternId ORDER BY lines DESC LIMIT 100", FORMAT_TABLE,
            links=[_link("Filter by this pattern", _TO_SERVICE)])
    d.panel("table", "Anomalies of the service",
            "SELECT Timestamp AS time, Kind AS kind, Severity AS severity, round(Score, 3) AS score, "
            f"Description AS description, ServiceName AS service, {_ANOMALY_WINDOW} FROM anomalies WHERE "
            f"$__timeFilter(Timestamp) AND ServiceName = '${{service}}' AND {_PATTERN_FILTER} "
            "ORDER BY Timestamp DESC LIMIT 200", FORMAT_TABLE,
            links=[_link("Logs around this anomaly", _TO_ANOMALY_LOGS)], overrides=_HIDE_WINDOW)
    d.panel("logs", "Logs",
            "SELECT Timestamp AS timestamp, Body AS body, SeverityText AS level, toString(PatternId) AS pattern_id, "
            f"ServiceName AS service, TraceId AS trace FROM otel_logs WHERE {_LOGS_TIME} AND "
            f"ServiceName = '${{service}}' AND {_PATTERN_FILTER} AND {_SEVERITY_FILTER} ORDER BY {_NEWEST_FIRST} "
            "LIMIT 1000", FORMAT_LOGS, w=24, h=14, options=_LOGS, overrides=_PATTERN_LINK,
            description="The trace id column is named `trace`, not trace_id: the ClickHouse plugin turns a "
                        "trace_id column into a link to a traces table, which otelproc does not write.")
    d.annotation("Anomalies", _ANOMALY_ANNOTATION.format(where="ServiceName = '${service}'"),
                 panels=("Lines by severity", "Log volume and expected band"))
    return d


def alerts() -> Dashboard:
    d = Dashboard("otelproc-alerts", "otelproc · Alerts history",
                  "Every notification the alerting processor sent, failed to send or dropped.", "now-24h")
    d.query_variable("service", "Service",
                     "SELECT DISTINCT ServiceName FROM alerts WHERE $__timeFilter(Timestamp) ORDER BY ServiceName",
                     multi=True, include_all=True)
    for title, outcome in (("Sent", "sent"), ("Failed", "failed"), ("Dropped", "dropped")):
        d.panel("stat", f"{title} notifications",
                f"SELECT countIf(Outcome = '{outcome}') AS notifications FROM alerts WHERE "
                f"$__timeFilter(Timestamp) AND {_SERVICE_FILTER}", FORMAT_TABLE, w=6, h=4, options=_STAT)
    d.panel("stat", "Delivery latency p95",
            "SELECT quantileIf(0.95)(LatencyMs, isFinite(LatencyMs)) AS p95_ms FROM alerts WHERE "
            f"$__timeFilter(Timestamp) AND Status = 'firing' AND {_SERVICE_FILTER}", FORMAT_TABLE, w=6, h=4,
            unit="ms", options=_STAT, description="Rule match to delivery, firing notifications.")
    d.panel("timeseries", "Notifications by outcome",
            "SELECT $__timeInterval(Timestamp) AS time, Outcome, count() AS notifications FROM alerts WHERE "
            f"$__timeFilter(Timestamp) AND {_SERVICE_FILTER} GROUP BY time, Outcome ORDER BY time",
            FORMAT_TIME_SERIES, custom=_ts(bars=True, stack=True), options=_LEGEND, w=16)
    d.panel("bargauge", "Alerts by name",
            "SELECT AlertName AS alert, uniqExact(Fingerprint) AS alerts FROM alerts WHERE $__timeFilter(Timestamp) "
            f"AND Status = 'firing' AND {_SERVICE_FILTER} GROUP BY alert ORDER BY alerts DESC LIMIT 20",
            FORMAT_TABLE, w=8, options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
                                        "orientation": "horizontal", "displayMode": "gradient"})
    d.panel("table", "History",
            "SELECT Timestamp AS time, AlertName AS alert, Status AS status, Outcome AS outcome, Receiver AS receiver, "
            "Integration AS integration, ServiceName AS service, Severity AS severity, Attempts AS attempts, "
            "round(LatencyMs, 1) AS latency_ms, Annotations['summary'] AS summary, Error AS error FROM alerts "
            f"WHERE $__timeFilter(Timestamp) AND {_SERVICE_FILTER} ORDER BY Timestamp DESC LIMIT 1000",
            FORMAT_TABLE, w=24, h=12,
            overrides=[{"matcher": {"id": "byName", "options": "outcome"},
                        "properties": [{"id": "mappings", "value": [{"type": "value", "options": {
                            "sent": {"color": "green", "index": 0}, "failed": {"color": "red", "index": 1},
                            "dropped": {"color": "orange", "index": 2}}}]},
                                       {"id": "custom.cellOptions", "value": {"type": "color-text"}}]}])
    return d


DASHBOARDS = {"overview": overview, "patterns": patterns, "anomalies": anomalies, "service": service,
              "alerts": alerts}


def render_all() -> dict[str, str]:
    """File name -> JSON text of every dashboard (deterministic: sorted keys, 2-space indent)."""
    return {f"{name}.json": json.dumps(build().to_json(), indent=2, sort_keys=True) + "\n"
            for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    ap.add_argument("--out", type=Path, action="append",
                    help="output directory (default: grafana/dashboards and otelproc/defaults/dashboards)")
    args = ap.parse_args(argv)
    stale = []
    for out_dir in args.out or (OUT_DIR, PACKAGED_DIR):
        for fname, text in render_all().items():
            path = out_dir / fname
            if args.check:
                if not path.is_file() or path.read_text() != text:
                    stale.append(str(path))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if stale:
        print("out of date (run python grafana/build_dashboards.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
