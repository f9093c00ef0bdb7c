"""``otelproc report``: the main dashboards' queries rendered without Grafana (PNG + HTML).

    from otelproc.report import render_report
    render_report(store, "report/", dashboards=("overview", "patterns", "anomalies", "alerts"))

Each shipped dashboard (``otelproc/defaults/dashboards``, built by ``grafana/build_dashboards.py``) becomes one PNG (one subplot per panel, drawn
from the same SQL, with the ClickHouse plugin's macros expanded by :func:`expand_macros`) and an
``index.html`` showing them. The time range defaults to the range of the data in ``otel_logs``,
so a replayed or simulated store renders without knowing its dates.

:func:`load_demo` fills a store by a demo run: simulated multi-service traffic with incidents
(``otelproc.simulate``) through the real ``patterns`` and ``anomaly`` processors into the real
``clickhouse`` exporter; tests and the README pictures use it.

Needs matplotlib (only :func:`render_report` imports it).
"""
from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

__all__ = ["expand_macros", "TimeRange", "data_time_range", "variable_values", "load_demo", "load_batches",
           "add_demo_alerts", "table_counts", "render_report",
           "dashboard_specs", "MAIN_DASHBOARDS", "panel_queries"]

from otelproc import defaults

MAIN_DASHBOARDS = ("overview", "patterns", "anomalies", "service", "alerts")


# --------------------------------------------------------------------------- macros

def _call_args(s: str, i: int) -> tuple[list[str], int]:
    """Arguments of the call whose ``(`` is at s[i], split on top-level commas; and the index after ``)``."""
    depth, cur, args, quote = 0, "", [], None
    for j in range(i, len(s)):
        c = s[j]
        if quote:
            cur += c
            if c == quote and s[j - 1] != "\\":
                quote = None
        elif c in "'\"`":
            quote = c
            cur += c
        elif c == "(":
            depth += 1
            if depth > 1:
                cur += c
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append(cur.strip())
                return args, j + 1
            cur += c
        elif c == "," and depth == 1:
            args.append(cur.strip())
            cur = ""
        else:
            cur += c
    raise ValueError(f"unbalanced parentheses in macro call at {s[i - 20:i + 20]!r}")


def _sql_quote(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def expand_macros(sql: str, from_ms: int, to_ms: int, interval_ms: int,
                  variables: Mapping[str, str | Sequence[str]] | None = None) -> str:
    """Expand a panel's SQL the way Grafana and the ClickHouse plugin (v4) do.

    1. ``$__conditionalAll(cond, $var)`` (frontend): ``cond``, or ``1=1`` when ``$var`` is All/empty;
    2. template variables ``$var``, ``${var}``, ``${var:singlequote}``, ``${var:csv}``; a variable set to
       ``"$__all"`` expands to every value given in ``variables["<name>.__all"]`` (what Grafana does
       without a custom all value);
    3. backend macros ``$__timeFilter``, ``$__timeFilter_ms``, ``$__dateFilter``, ``$__dateTimeFilter``/``$__dt``,
       ``$__timeFrom``, ``$__timeTo``, ``$__timeInterval``, ``$__timeInterval_ms``, ``$__timeGroup``,
       ``$__fromTime``, ``$__toTime``, ``$__fromTime_ms``, ``$__toTime_ms``, ``$__interval_s``.

    Raises ValueError for a variable that is not given or a macro this function does not know,
    so a dashboard cannot use something the tests never expanded.
    """
    variables = dict(variables or {})
    f, t, iv = from_ms // 1000, to_ms // 1000, max(interval_ms // 1000, 1)

    def day(s: int) -> str:
        return datetime.fromtimestamp(s, timezone.utc).strftime("%Y-%m-%d")

    def values_of(name: str) -> list[str]:
        if name not in variables:
            raise ValueError(f"template variable ${name} is used but not defined")
        v = variables[name]
        vals = list(v) if isinstance(v, (list, tuple)) else [v]
        if vals == ["$__all"]:
            vals = list(variables.get(f"{name}.__all", []))
        return [str(x) for x in vals]

    while (k := sql.rfind("$__conditionalAll(")) != -1:
        args, end = _call_args(sql, k + len("$__conditionalAll"))
        if len(args) != 2:
            raise ValueError(f"$__conditionalAll needs 2 arguments, got {args}")
        name = re.sub(r"^\$\{?(\w+).*$", r"\1", args[1])
        if name not in variables:
            raise ValueError(f"template variable ${name} is used but not defined")
        v = variables[name]
        is_all = v in ("", "$__all") or (isinstance(v, (list, tuple)) and (not v or list(v) == ["$__all"]))
        sql = sql[:k] + ("1=1" if is_all else args[0]) + sql[end:]

    def var(m: re.Match) -> str:
        name, fmt = m.group(1) or m.group(3), m.group(2)
        if name.startswith("__"):
            return m.group(0)
        vals = values_of(name)
        if fmt == "singlequote":
            return ",".join(_sql_quote(x) for x in vals) if vals else "''"
        if fmt in (None, "csv", "raw"):
            return ",".join(vals)
        raise ValueError(f"variable format :{fmt} is not supported by the expander")

    sql = re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)([A-Za-z_]\w*)", var, sql)

    def interval_seconds(text: str) -> int:
        m = re.fullmatch(r"\s*'?(\d+)([smhd]?)'?\s*", text)
        if not m:
            raise ValueError(f"$__timeGroup interval must look like 5m, got {text!r}")
        return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]

    funcs: dict[str, Callable[..., str]] = {
        "timeFilter": lambda c: f"{c} >= toDateTime({f}) AND {c} <= toDateTime({t})",
        "timeFilter_ms": lambda c: f"{c} >= fromUnixTimestamp64Milli({from_ms}) AND {c} <= fromUnixTimestamp64Milli({to_ms})",
        "dateFilter": lambda c: f"{c} >= toDate('{day(f)}') AND {c} <= toDate('{day(t)}')",
        "dateTimeFilter": lambda d, c: (f"({d} >= toDate('{day(f)}') AND {d} <= toDate('{day(t)}')) AND "
                                        f"({c} >= toDateTime({f}) AND {c} <= toDateTime({t}))"),
        "timeFrom": lambda c: f"{c} >= toDateTime({f})",
        "timeTo": lambda c: f"{c} <= toDateTime({t})",
        "timeInterval": lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {iv} second)",
        "timeInterval_ms": lambda c: f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL {max(interval_ms, 1)} millisecond)",
        "timeGroup": lambda c, i: f"toStartOfInterval(toDateTime({c}), INTERVAL {interval_seconds(i)} second)",
    }
    funcs["dt"] = funcs["dateTimeFilter"]
    plain = {"fromTime": f"toDateTime({f})", "toTime": f"toDateTime({t})",
             "fromTime_ms": f"fromUnixTimestamp64Milli({from_ms})", "toTime_ms": f"fromUnixTimestamp64Milli({to_ms})",
             "interval_s": str(iv)}
    out, i = "", 0
    while (k := sql.find("$__", i)) != -1:
        m = re.match(r"\$__(\w+)", sql[k:])
        name = m.group(1) if m else ""
        j = k + 3 + len(name)
        out += sql[i:k]
        if name in funcs and sql[j:j + 1] == "(":
            args, i = _call_args(sql, j)
            out += funcs[name](*args)
        elif name in plain:
            out += plain[name]
            i = j
        else:
            raise ValueError(f"macro $__{name} is not known to the expander")
    return out + sql[i:]


# --------------------------------------------------------------------------- dashboards

def dashboard_specs(names: Sequence[str] = MAIN_DASHBOARDS) -> dict[str, dict[str, Any]]:
    """Dashboard name -> dashboard JSON (the shipped ``otelproc/defaults/dashboards/<name>.json``)."""
    known = sorted(p.stem for p in defaults.DASHBOARDS.glob("*.json"))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown dashboard(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return {n: json.loads((defaults.DASHBOARDS / f"{n}.json").read_text()) for n in names}


def panel_queries(dashboard: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query panel of a dashboard, in layout order (rows skipped)."""
    out = []
    for p in dashboard.get("panels", []):
        for tgt in p.get("targets", []):
            out.append((p, tgt))
    return out


@dataclass(frozen=True)
class TimeRange:
    from_ms: int
    to_ms: int
    interval_ms: int

    @classmethod
    def around(cls, first_ns: int, last_ns: int, points: int = 120) -> "TimeRange":
        """A range covering [first, last] with an interval giving about ``points`` buckets (as Grafana would)."""
        f, t = first_ns // 1_000_000, -(-last_ns // 1_000_000) + 1000
        step = max(1000, (t - f) // points)
        nice = [1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400]
        step = next((n * 1000 for n in nice if n * 1000 >= step), step)
        return cls(f, t, step)


def data_time_range(store, table: str = "otel_logs", column: str = "Timestamp") -> TimeRange:
    """The time range of the data in ``table`` (ValueError when it is empty)."""
    rows = store.query_rows(f"SELECT toUnixTimestamp64Nano(min({column})), toUnixTimestamp64Nano(max({column})), "
                            f"count() FROM {table}")
    first, last, n = rows[0]
    if not n:
        raise ValueError(f"{table} is empty in database {store.database}: nothing to report")
    return TimeRange.around(int(first), int(last))


def variable_values(store, dashboard: Mapping[str, Any], tr: TimeRange,
                    choose: Callable[[str, list[str]], Any] | None = None) -> dict[str, Any]:
    """Resolve the dashboard's variables in order, as Grafana does on load.

    Each variable's query is expanded with the variables before it and run; ``choose(name, values)``
    picks the value (default: All when the variable allows it, else the first value). The result
    maps name -> chosen value, plus ``name.__all`` -> every value.
    """
    out: dict[str, Any] = {}
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        sql = expand_macros(v["query"]["rawSql"], tr.from_ms, tr.to_ms, tr.interval_ms, out)
        rows = store.query_rows(sql)
        cols = list(rows.column_names)
        vi = cols.index("__value") if "__value" in cols else 0
        values = [str(r[vi]) for r in rows]
        out[f"{v['name']}.__all"] = values
        if choose is not None:
            out[v["name"]] = choose(v["name"], values)
        elif v.get("includeAll"):
            out[v["name"]] = "$__all"
        else:
            out[v["name"]] = values[0] if values else ""
    return out


# --------------------------------------------------------------------------- demo data

def load_demo(store, *, duration_s: float = 7200.0, seed: int = 7, batch_seconds: float = 30.0,
              context=None) -> dict[str, int]:
    """Fill ``store``'s database by a demo run and return row counts per table.

    Simulated traffic of four services with three incidents (an error burst, a new error
    pattern, a latency creep) goes through :func:`load_batches`; then :func:`add_demo_alerts`.
    """
    from otelproc.simulate import Incident, Scenario, simulate

    half = duration_s / 2
    sc = Scenario(seed=seed, duration_s=duration_s, batch_seconds=batch_seconds, incidents=[
        Incident("error_burst", "checkout", half, half + 600),
        Incident("new_error_pattern", "payment", half + 900, half + 1500),
        Incident("latency_creep", "inventory", duration_s * 0.4, duration_s),
    ])
    load_batches(store, simulate(sc), context=context)
    add_demo_alerts(store, seed=seed)
    return table_counts(store)


def load_batches(store, batches, context=None) -> None:
    """Run ``batches`` (LogBatches in event-time order) through the real ``patterns`` and ``anomaly``
    processors into the real ``clickhouse`` exporter (which creates the schema) of ``store``."""
    from otelproc.component import Context, Kind
    from otelproc.exporters.clickhouse import ClickHouseExporter, ClickHouseExporterConfig
    from otelproc.registry import factories

    ctx = context or Context()
    exp = ClickHouseExporter("clickhouse", ClickHouseExporterConfig(endpoint=store.endpoint, database=store.database),
                             ctx)
    facs = factories()
    pat_fac = facs[(Kind.PROCESSOR, "patterns")]
    ano_fac = facs[(Kind.PROCESSOR, "anomaly")]
    anomaly = ano_fac.create("anomaly", ano_fac.config_class(), exp, ctx)
    patterns = pat_fac.create("patterns", pat_fac.config_class(), anomaly, ctx)
    exp.start()
    anomaly.start()
    patterns.start()
    try:
        for batch in batches:
            patterns.consume(batch)
    finally:
        patterns.shutdown()
        anomaly.shutdown()
        exp.shutdown()


def table_counts(store) -> dict[str, int]:
    """Rows per otelproc table of ``store``'s database."""
    return {t: int(store.query_rows(f"SELECT count() FROM {t}")[0][0])
            for t in ("otel_logs", "log_patterns", "pattern_counts", "anomalies", "series", "alerts")}


def add_demo_alerts(store, seed: int = 7) -> None:
    """The ``alerts`` rows the alerting processor would write for a webhook receiver, from the critical
    anomalies in the store (demo runs have no receiver): one 'sent' firing notification per critical
    finding, a resolve 10 minutes later, and the first one 'failed' once before it was sent."""
    import numpy as np
    import pyarrow as pa

    crit = store.query_arrow("SELECT Timestamp, ServiceName, Kind, Description, Severity FROM anomalies "
                             "WHERE Severity = 'critical' ORDER BY Timestamp")
    if crit.num_rows:
        ts = crit.column("Timestamp").cast(pa.int64()).to_numpy()
        svc = crit.column("ServiceName").to_pylist()
        kind = crit.column("Kind").to_pylist()
        desc = crit.column("Description").to_pylist()
        rows: dict[str, list] = {k: [] for k in ("Timestamp", "AlertName", "Fingerprint", "Status", "Outcome",
                                                 "Receiver", "Integration", "ServiceName", "Severity", "GroupKey",
                                                 "Attempts", "Error", "LatencyMs", "StartsAt", "EndsAt",
                                                 "EventTime", "Labels", "Annotations")}
        rng = np.random.default_rng(seed)

        def add(t, name, fp, status, outcome, service, attempts, error, lat, starts, ends, summary):
            rows["Timestamp"].append(int(t))
            rows["AlertName"].append(name)
            rows["Fingerprint"].append(fp)
            rows["Status"].append(status)
            rows["Outcome"].append(outcome)
            rows["Receiver"].append("oncall")
            rows["Integration"].append("webhook[0]")
            rows["ServiceName"].append(service)
            rows["Severity"].append("critical")
            rows["GroupKey"].append(f'{{}}:{{alertname="{name}"}}')
            rows["Attempts"].append(attempts)
            rows["Error"].append(error)
            rows["LatencyMs"].append(lat)
            rows["StartsAt"].append(int(starts))
            rows["EndsAt"].append(int(ends))
            rows["EventTime"].append(int(starts))
            rows["Labels"].append([("alertname", name), ("service", service), ("severity", "critical")])
            rows["Annotations"].append([("summary", summary)])

        for i in range(crit.num_rows):
            name = {"error_ratio": "ErrorRatioHigh", "new_pattern": "NewErrorPattern"}.get(kind[i], "LogAnomaly")
            fp = f"{abs(hash((name, svc[i], i))) & 0xFFFFFFFFFFFFFFFF:016x}"
            t = int(ts[i])
            if i == 0:
                add(t + 50_000_000, name, fp, "firing", "failed", svc[i], 3, "webhook: HTTP 503 Service Unavailable",
                    math.nan, t, 0, desc[i])
            add(t + 80_000_000, name, fp, "firing", "sent", svc[i], 1 + (i == 0), "", float(rng.uniform(2, 40)),
                t, 0, desc[i])
            if i < crit.num_rows - 1:  # the last one is still firing
                add(t + 600_000_000_000, name, fp, "resolved", "sent", svc[i], 1, "", math.nan, t,
                    t + 600_000_000_000, desc[i])
        schema = pa.schema([
            ("Timestamp", pa.timestamp("ns")), ("AlertName", pa.string()), ("Fingerprint", pa.string()),
            ("Status", pa.string()), ("Outcome", pa.string()), ("Receiver", pa.string()),
            ("Integration", pa.string()), ("ServiceName", pa.string()), ("Severity", pa.string()),
            ("GroupKey", pa.string()), ("Attempts", pa.uint16()), ("Error", pa.string()),
            ("LatencyMs", pa.float64()), ("StartsAt", pa.timestamp("ns")), ("EndsAt", pa.timestamp("ns")),
            ("EventTime", pa.timestamp("ns")), ("Labels", pa.map_(pa.string(), pa.string())),
            ("Annotations", pa.map_(pa.string(), pa.string()))])
        store.insert_arrow("alerts", pa.table({k: pa.array(v, type=schema.field(k).type) for k, v in rows.items()},
                                              schema=schema))


# --------------------------------------------------------------------------- rendering

def _fmt_cell(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    s = str(v)
    return s if len(s) <= 70 else s[:67] + "..."


def _draw_panel(ax, panel: Mapping[str, Any], rows, title: str, max_rows: int = 8) -> None:
    import numpy as np

    ptype = panel["type"]
    cols = list(rows.column_names)
    # "$" starts matplotlib mathtext: titles are shown with their variables substituted, "$" escaped
    ax.set_title(title.replace("$", r"\$"), fontsize=9, loc="left")
    if not rows:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", color="grey")
        ax.set_axis_off()
        return
    if ptype == "timeseries" or (ptype == "stat" and cols and cols[0] == "time"):
        labels = [c for c in cols[1:] if not isinstance(rows[0][cols.index(c)], (int, float))]
        values = [c for c in cols[1:] if c not in labels]
        series: dict[str, tuple[list, list]] = {}
        for r in rows:
            key_prefix = " ".join(str(r[cols.index(c)]) for c in labels)
            for vc in values:
                name = (key_prefix + " " + vc).strip() if len(values) > 1 or not key_prefix else key_prefix
                xs, ys = series.setdefault(name, ([], []))
                # chDB's Arrow gives DateTime (toStartOfInterval) as uint32 epoch seconds
                xs.append(datetime.fromtimestamp(r[0], timezone.utc) if isinstance(r[0], int) else r[0])
                v = r[cols.index(vc)]
                ys.append(np.nan if v is None else float(v))
        for name, (xs, ys) in list(series.items())[:12]:
            ax.plot(xs, ys, label=name[:40], linewidth=1)
        if {"lower", "upper"} <= set(series):
            ax.fill_between(series["lower"][0], series["lower"][1], series["upper"][1], alpha=0.2)
        ax.legend(fontsize=6, loc="upper left")
        ax.tick_params(labelsize=6)
        return
    if ptype == "stat":
        v = rows[0][0]
        text = "–" if v is None or (isinstance(v, float) and math.isnan(v)) else (
            f"{100 * v:.2f} %" if panel.get("fieldConfig", {}).get("defaults", {}).get("unit") == "percentunit"
            else _fmt_cell(v))
        ax.text(0.5, 0.45, text, ha="center", va="center", fontsize=22, weight="bold")
        ax.set_axis_off()
        return
    if ptype in ("piechart", "bargauge"):
        names = [str(r[0])[:30] for r in rows][:15]
        vals = [float(r[1]) for r in rows][:15]
        ax.barh(names[::-1], vals[::-1])
        ax.tick_params(labelsize=6)
        return
    # table and logs: the first rows as text
    shown = [[_fmt_cell(v) for v in r] for r in rows[:max_rows]]
    if ptype == "logs":
        ti, bi = cols.index("timestamp"), cols.index("body")
        lines = [f"{_fmt_cell(r[ti])}  {str(r[bi])[:110]}" for r in rows[:max_rows * 2]]
        ax.text(0, 1, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=6)
        ax.set_axis_off()
        return
    keep = [i for i, c in enumerate(cols) if c not in ("pattern_id",)][:7]
    table = ax.table(cellText=[[r[i] for i in keep] for r in shown], colLabels=[cols[i] for i in keep],
                     loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(6)
    table.scale(1, 1.1)
    ax.set_axis_off()


def render_report(store, out_dir: str | Path, dashboards: Sequence[str] = MAIN_DASHBOARDS,
                  time_range: TimeRange | None = None) -> list[Path]:
    """Render each dashboard's panels from ``store`` into ``out_dir/<name>.png`` plus ``index.html``.

    Variables take All where allowed, else their first value; a repeated panel is drawn for the
    first value. Returns the written paths (PNGs first, then index.html).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tr = time_range or data_time_range(store)
    written: list[Path] = []
    sections = []
    for name, dash in dashboard_specs(dashboards).items():
        variables = variable_values(store, dash, tr)
        queries = panel_queries(dash)
        ncols = 2
        nrows = max(1, math.ceil(len(queries) / ncols))
        fig, axes = plt.subplots(nrows, ncols, figsize=(16, 3.2 * nrows), squeeze=False)
        errors = []
        for ax, (panel, tgt) in zip(axes.flat, queries):
            local = dict(variables)
            if panel.get("repeat"):
                rep = panel["repeat"]
                first = (variables.get(f"{rep}.__all") or [""])[0]
                local[rep] = first
            try:
                rows = store.query_rows(expand_macros(tgt["rawSql"], tr.from_ms, tr.to_ms, tr.interval_ms, local))
                title = re.sub(r"\$\{(\w+)\}", lambda m: str(local.get(m.group(1), m.group(0))).replace(
                    "$__all", "All"), panel["title"])
                _draw_panel(ax, panel, rows, title)
            except Exception as e:  # noqa: BLE001 - one failing panel must not lose the report
                errors.append(f"{panel['title']}: {e}")
                ax.text(0.5, 0.5, f"query failed:\n{str(e)[:200]}", ha="center", va="center", fontsize=6, color="red",
                        wrap=True)
                ax.set_axis_off()
        for ax in list(axes.flat)[len(queries):]:
            ax.set_axis_off()
        span = (f"{datetime.fromtimestamp(tr.from_ms / 1000, timezone.utc):%Y-%m-%d %H:%M} – "
                f"{datetime.fromtimestamp(tr.to_ms / 1000, timezone.utc):%Y-%m-%d %H:%M} UTC")
        fig.suptitle(f"{dash['title']}   ({span})", fontsize=12, x=0.01, ha="left")
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        png = out / f"{name}.png"
        fig.savefig(png, dpi=90)
        plt.close(fig)
        written.append(png)
        err_html = "".join(f"<li>{html.escape(e)}</li>" for e in errors)
        sections.append(f"<h2>{html.escape(dash['title'])}</h2><p>{html.escape(dash.get('description', ''))}</p>"
                        f"<img src='{png.name}' style='max-width:100%'>"
                        + (f"<ul style='color:red'>{err_html}</ul>" if errors else ""))
    index = out / "index.html"
    index.write_text("<!doctype html><meta charset='utf-8'><title>otelproc report</title>"
                     "<body style='font-family:sans-serif'><h1>otelproc report</h1>" + "".join(sections) + "</body>")
    written.append(index)
    return written
