"""``otelproc`` command line: serve · validate · sql · demo · report · warmup · patterns (FILE | top | diff) ·
anomalies · incidents · alerts · tail."""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

from otelproc import defaults

DEFAULT_CONFIG = str(defaults.CONFIG)
CONFIG_HELP = "config file (default: the embedded default config, data under ./data or $OTELPROC_HOME)"
log = logging.getLogger("otelproc.cli")


def _check_home(create: bool) -> None:
    """$OTELPROC_HOME, where the default config keeps its data, must be a directory (writable to serve)."""
    home = os.environ.get("OTELPROC_HOME")
    if not home:
        return
    path = Path(home)
    problem = ""
    if path.exists() and not path.is_dir():
        problem = "exists and is not a directory"
    elif create:
        try:
            path.mkdir(parents=True, exist_ok=True)
            if not os.access(path, os.W_OK | os.X_OK):
                problem = "is not writable"
        except OSError as e:
            problem = f"cannot be created ({e.strerror})"
    if problem:
        print(f"otelproc: $OTELPROC_HOME={home} {problem}: set it to a directory otelproc may write, "
              "or unset it to keep the data under ./data", file=sys.stderr)
        raise SystemExit(2)


def _load(path: str, create_home: bool = False):
    from otelproc.config import ConfigError, load_config

    _check_home(create_home)
    config = Path(path)
    if not config.is_file():
        what = "is a directory, not a config file" if config.is_dir() else \
            "not found" + ("" if config.is_absolute() else f" in {os.getcwd()}")
        print(f"otelproc: config file {path} {what}; leave --config out to run the embedded default config",
              file=sys.stderr)
        raise SystemExit(2)
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"otelproc: {path}: {len(e.errors)} configuration error(s):", file=sys.stderr)
        for err in e.errors:
            print(f"  {err}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    pipes = ", ".join(f"{n}: {' -> '.join(p.receivers + p.processors + p.exporters)}" for n, p in cfg.service.pipelines.items())
    print(f"{args.config}: valid ({pipes})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from otelproc.pipeline import Service
    from otelproc.telemetry import MetricsServer, setup_logging
    from otelproc.warmup import warm_up

    cfg = _load(args.config, create_home=True)
    tl = cfg.service.telemetry
    setup_logging(tl.logs.level, tl.logs.encoding)
    warm_up(say=log.info)
    service = Service(cfg)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    metrics = None
    try:
        service.start()
    except Exception as e:
        log.error("failed to start: %s", e)
        return 1
    try:
        if tl.metrics.address:
            try:
                metrics = MetricsServer(service.telemetry, tl.metrics.address, ready=service.ready)
            except (OSError, ValueError) as e:
                log.error("failed to start: %s", e)
                return 1
            log.info("metrics on http://%s/metrics", tl.metrics.address)
        if args.ready_file:  # lets tests and scripts know the ports are bound
            tmp = Path(f"{args.ready_file}.tmp")  # whole or absent: a reader never sees half a file
            tmp.write_text(json.dumps(_ports(service)))
            os.replace(tmp, args.ready_file)
        stop.wait()
        log.info("signal received: draining and shutting down")
    finally:
        service.shutdown()
        if metrics is not None:
            metrics.close()
    return 0


def _ports(service) -> dict:
    out = {}
    for rid, r in service.receivers.items():
        out[rid] = {"grpc": getattr(r, "grpc_port", None), "http": getattr(r, "http_port", None)}
    return out


def _store_from_config(path: str, exporter: str | None):
    """The store of the config's clickhouse exporter: opened here when free, else through the running
    otelproc's query endpoint (otelproc.store.running); exits with one line when neither works."""
    from otelproc.store.running import StoreUnavailable, open_config_store

    cfg = _load(path)
    chs = [k for k in cfg.exporters if k.split("/", 1)[0] == "clickhouse"]
    if not chs:
        raise SystemExit(f"otelproc: {path} has no clickhouse exporter to query")
    if exporter is not None and exporter not in chs:
        raise SystemExit(f"otelproc: no exporter {exporter!r}; clickhouse exporters: {', '.join(chs)}")
    try:
        return open_config_store(cfg, exporter or chs[0])
    except StoreUnavailable as e:
        raise SystemExit(f"otelproc: {e}") from None


def _open_store(open_store, who: str):
    """``open_store()``, or exit 1 with one line saying why the store cannot be opened."""
    try:
        return open_store()
    except SystemExit:
        raise
    except Exception as e:  # unreachable server, bad endpoint (a busy embedded store is reached through
        # its otelproc's query endpoint, otelproc.store.running)
        print(f"{who}: cannot open the store: {one_line_error(str(e))}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_sql(args: argparse.Namespace) -> int:
    from otelproc.store import output_format_clause

    store = _open_store(lambda: _store_from_config(args.config, args.exporter), "otelproc sql")
    if output_format_clause(args.query):  # `... FORMAT JSONEachRow`: the engine's bytes, as clickhouse-local
        try:
            try:
                out = store.query_bytes(args.query)
            except Exception as e:
                print(_query_failure("otelproc sql", e), file=sys.stderr)
                return 1
            sys.stdout.buffer.write(out)
            sys.stdout.flush()
        finally:
            store.close()
        return 0
    return _print_query(store, lambda: store.query_rows(args.query), args.format, "otelproc")


_SCOPE_RE = re.compile(r"\s+in scope .*?(?=\.\s*\([A-Z_]+\)|$)", re.S | re.I)


def one_line_error(message: str) -> str:
    """A ClickHouse error as one line: from ``Code: N.`` on, without the query it quotes ("In scope
    SELECT ...", "[statement: ...]") and the version suffix."""
    i = message.find("Code: ")
    msg = message[i:] if i >= 0 else message
    msg = re.sub(r"\s*\[statement: .*\]\s*$", "", msg.strip(), flags=re.S)
    msg = _SCOPE_RE.sub("", msg)
    msg = re.sub(r"\s*\(version [^)]*\)\s*$", "", msg)
    return " ".join(msg.split())


def _print_query(store, run, fmt: str, who: str) -> int:
    """Run ``run()`` (rows with column_names), print them in ``fmt``, close ``store``; 1 on a failed query."""
    try:
        try:
            rows = run()
        except Exception as e:
            print(_query_failure(who, e), file=sys.stderr)
            return 1
        print_rows(list(rows.column_names), rows, fmt)
    finally:
        store.close()
    return 0


_OTELPROC_TABLES = ("otel_logs", "log_patterns", "pattern_counts", "anomalies", "alerts", "series", "incidents")


def _query_failure(who: str, e: Exception) -> str:
    """One line for a failed query; a store without otelproc's tables says how to fill it."""
    message = one_line_error(str(e))
    missing = re.search(r"Unknown (?:table|database)[^']*'([^']+)'", message)
    if missing and missing.group(1).split(".")[-1] in _OTELPROC_TABLES + ("otel",):
        return (f"{who}: the store holds no otelproc data yet ({missing.group(0)}): run `otelproc serve` "
                "or `otelproc demo` first, or name another store with --config")
    return f"{who}: query failed: {message}"


def print_rows(columns: list[str], rows: list[tuple], fmt: str = "table", out=None) -> None:
    """Print query results as an aligned table, JSON lines or CSV."""
    out = out or sys.stdout
    if fmt == "json":
        for r in rows:
            out.write(json.dumps(dict(zip(columns, r)), default=str, ensure_ascii=False) + "\n")
        return
    if fmt == "csv":
        w = csv.writer(out)
        w.writerow(columns)
        w.writerows(rows)
        return
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for r in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")
    out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")


def _cell(v) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)
    s = s.replace("\n", "\\n")
    return s if len(s) <= 120 else s[:117] + "..."


def cmd_patterns(args: argparse.Namespace) -> int:
    # `patterns top` is the store view unless a file literally named "top" exists (then use --top or ./top)
    if args.top or (args.target == "top" and not Path("top").is_file()):
        return _view(args, "patterns_top")
    if args.target == "diff" and not Path("diff").is_file():
        return _view(args, "pattern_diff")
    if args.target is None:
        print("otelproc patterns: give a FILE to mine, or `top` for the most frequent patterns in the store",
              file=sys.stderr)
        return 2
    from otelproc.patterns import mine_file
    from otelproc.warmup import warm_up

    settings = _patterns_settings(args.config, args.processor)
    warm_up()
    try:
        templates = mine_file(args.target, csv_out=args.csv, settings=settings)
    except OSError as e:
        print(f"otelproc: {e}", file=sys.stderr)
        return 1
    print_rows(["count", "template"], [(c, t) for t, c in templates], args.format)
    return 0


def _patterns_settings(path: str, processor: str | None) -> dict:
    """The miner settings of the config's patterns processor (``--processor``, else the first one;
    the defaults when the config has none), validated like any config."""
    from otelproc.processors.patterns import PatternsProcessorConfig

    cfg = _load(path)
    procs = {k: v for k, v in cfg.processors.items() if k.split("/", 1)[0] == "patterns"}
    if processor is not None:
        if processor not in procs:
            raise SystemExit(f"otelproc: {path} has no processor {processor!r}; patterns processors: "
                             f"{', '.join(procs) or 'none'}")
        return procs[processor].miner_kwargs()
    return (next(iter(procs.values())) if procs else PatternsProcessorConfig()).miner_kwargs()


def _view_store(args: argparse.Namespace):
    """The store a view reads: --endpoint (a server, or a running otelproc's clickhouse_query
    extension) if given, else the config's clickhouse exporter (embedded: only while otelproc is stopped)."""
    if args.endpoint:
        from otelproc.store import open_store

        return open_store(args.endpoint, args.database, username=args.user,
                          password=os.environ.get("OTELPROC_QUERY_PASSWORD", ""), create_database=False)
    return _store_from_config(args.config, args.exporter)


def _view(args: argparse.Namespace, name: str) -> int:
    from otelproc import views

    try:
        since = views.parse_since(args.since)
        kwargs = {"since_s": since, "limit": args.limit, "service": args.service or ""}
        if name == "anomalies":
            kwargs["kind"] = args.kind or ""
        elif name == "pattern_diff":
            del kwargs["since_s"]
            now = time.time()
            kwargs.update(window_s=views.parse_range(args.window, "--window"),
                          baseline_s=views.parse_range(args.baseline, "--baseline"),
                          end_s=views.parse_time(args.end, now, "--end"), p=args.p,
                          baseline_end_s=None if args.baseline_end is None else
                          views.parse_time(args.baseline_end, now, "--baseline-end"))
        elif name == "alerts":
            kwargs["outcome"] = args.outcome or ""
        elif name == "tail" and args.pattern is not None:
            kwargs["pattern_id"] = views.parse_pattern_id(args.pattern)
        views.check_limit(args.limit)
    except ValueError as e:
        print(f"otelproc {args.command}: {e}", file=sys.stderr)
        return 2
    store = _open_store(lambda: _view_store(args), f"otelproc {args.command}")
    return _print_query(store, lambda: getattr(views, name)(store, **kwargs), args.format, f"otelproc {args.command}")


def cmd_anomalies(args: argparse.Namespace) -> int:
    return _view(args, "anomalies")


def cmd_incidents(args: argparse.Namespace) -> int:
    return _view(args, "incidents")


def cmd_alerts(args: argparse.Namespace) -> int:
    return _view(args, "alerts")


def cmd_tail(args: argparse.Namespace) -> int:
    return _view(args, "tail")


def cmd_demo(args: argparse.Namespace) -> int:
    from otelproc.demo import demo_main
    from otelproc.telemetry import setup_logging

    setup_logging(args.log_level)
    return demo_main(duration_s=args.duration, speed=args.speed, rate=args.rate, seed=args.seed,
                     directory=args.dir, rules_file=args.rules, check=args.check)


def cmd_warmup(args: argparse.Namespace) -> int:
    from otelproc.warmup import cache_directory, is_warm, warm_up

    if is_warm() and not args.force:
        print(f"otelproc: kernels already compiled (cache {cache_directory()}; --force to run the warm-up again)")
        return 0
    warm_up(say=lambda line: print(f"otelproc: {line}", flush=True), force=True)
    return 0


def _add_view_options(s: argparse.ArgumentParser, since_default: str = "all") -> None:
    s.add_argument("--config", default=DEFAULT_CONFIG, help="whose clickhouse exporter store to read, and for "
                                                           "`patterns FILE` whose patterns processor settings to mine "
                                                           "with (default: the embedded default config's)")
    s.add_argument("--exporter", help="which clickhouse exporter's store (default: the first)")
    s.add_argument("--endpoint", help="read this ClickHouse HTTP endpoint instead (a server, or a running "
                                      "otelproc's clickhouse_query extension, e.g. http://127.0.0.1:8123)")
    s.add_argument("--database", default="otel", help="database at --endpoint (default otel)")
    s.add_argument("--user", default="default", help="user at --endpoint (password: $OTELPROC_QUERY_PASSWORD)")
    s.add_argument("--service", help="only this service")
    s.add_argument("--since", default=since_default, help="time window back from now: 15m, 1h, 2d or all "
                                                          f"(default {since_default})")
    s.add_argument("-n", "--limit", type=int, default=20, help="most rows to show (default 20)")
    s.add_argument("--format", choices=("table", "json", "csv"), default="table")


def cmd_report(args: argparse.Namespace) -> int:
    import importlib.util

    from otelproc.report import MAIN_DASHBOARDS, load_demo, render_report
    from otelproc.store import StoreError

    if importlib.util.find_spec("matplotlib") is None:
        print("otelproc report: needs matplotlib, which is not installed: pip install 'otelproc[report]'",
              file=sys.stderr)
        return 1
    names = [d.strip() for d in args.dashboards.split(",")] if args.dashboards else list(MAIN_DASHBOARDS)
    unknown = sorted(set(names) - set(MAIN_DASHBOARDS))
    if unknown:
        print(f"otelproc: unknown dashboards {', '.join(unknown)}; known: {', '.join(MAIN_DASHBOARDS)}", file=sys.stderr)
        return 2
    store = _open_store(lambda: _store_from_config(args.config, args.exporter), "otelproc report")
    try:
        if args.demo:
            from otelproc.warmup import warm_up

            warm_up()
            counts = load_demo(store)
            print("demo data loaded: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
        paths = render_report(store, args.out, names)
    except OSError as e:
        print(f"otelproc report: cannot write {e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    except StoreError as e:
        print(_query_failure("otelproc report", e), file=sys.stderr)
        return 1
    finally:
        store.close()
    for p in paths:
        print(p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="otelproc", description="OpenTelemetry-native log analysis engine")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the pipelines of a config")
    s.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    s.add_argument("--ready-file", help="write the bound ports as JSON here once serving")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("validate", help="check a config and report every error with its key path")
    s.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    s.set_defaults(fn=cmd_validate)

    s = sub.add_parser("sql", help="run a query against the configured store and print the result",
                       description="Run one query on the store of --config's clickhouse exporter (tables resolve "
                                   "in its database). While `otelproc serve` holds an embedded store, the query "
                                   "goes through that process's read-only clickhouse_query endpoint. A trailing "
                                   "FORMAT clause (e.g. FORMAT JSONEachRow) prints ClickHouse's output as it is.")
    s.add_argument("query", help="SQL, e.g. \"SELECT ServiceName, count() FROM otel_logs GROUP BY 1\"")
    s.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    s.add_argument("--exporter", help="which clickhouse exporter's store (default: the first)")
    s.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="how to print the rows (ignored when the query ends with a FORMAT clause)")
    s.set_defaults(fn=cmd_sql)

    s = sub.add_parser("patterns", help="`patterns FILE`: mine the templates of a file (one body per line); "
                                        "`patterns top`: the most frequent patterns in the store; "
                                        "`patterns diff`: new, gone and shifted patterns (--window vs --baseline)",
                       description="otelproc patterns FILE mines a file with one log body per line; "
                                   "otelproc patterns top shows the most frequent patterns in the store "
                                   "(a file named 'top' is mined: pass ./top, or use --top for the view)")
    s.add_argument("target", nargs="?", metavar="FILE|top|diff")
    s.add_argument("--top", action="store_true", help="the store view, whatever the positional argument")
    s.add_argument("--csv", help="FILE mode: write LineId,ClusterId,Template per line to this file")
    s.add_argument("--processor", help="FILE mode: mine with the settings of this patterns processor of --config "
                                       "(masking rules, pinned templates, message fields...; default: the first)")
    s.add_argument("--window", default="1h", help="diff: the range compared (default 1h), ending at --end")
    s.add_argument("--end", help="diff: end of the window: now (default), a duration back (2h) or an ISO time")
    s.add_argument("--baseline", default="1d", help="diff: the range compared with (default 1d), ending at "
                                                    "--baseline-end (default: where the window starts)")
    s.add_argument("--baseline-end", help="diff: end of the baseline: a duration back (1d) or an ISO time")
    s.add_argument("--p", type=float, default=1e-3, help="diff: show patterns whose change has an adjusted p at "
                                                         "most this (default 0.001)")
    _add_view_options(s)
    s.set_defaults(fn=cmd_patterns)

    s = sub.add_parser("anomalies", help="the latest anomalies found (newest first)")
    _add_view_options(s)
    s.add_argument("--kind", help="only this kind (spike, drop, level_shift, error_ratio, new_pattern, trend, ...)")
    s.set_defaults(fn=cmd_anomalies)

    s = sub.add_parser("incidents", help="incidents across services: probable origin and the chain of services")
    _add_view_options(s)
    s.set_defaults(fn=cmd_incidents)

    s = sub.add_parser("alerts", help="alert notifications sent / failed / dropped and their receivers")
    _add_view_options(s)
    s.add_argument("--outcome", choices=("sent", "failed", "dropped"), help="only this delivery outcome")
    s.set_defaults(fn=cmd_alerts)

    s = sub.add_parser("tail", help="the last log lines in the store (of one pattern with --pattern ID)")
    _add_view_options(s)
    s.add_argument("--pattern", help="pattern id as `patterns top` prints it (16 hex digits) or decimal")
    s.set_defaults(fn=cmd_tail)

    s = sub.add_parser("report", help="draw the main Grafana dashboards from the store as PNG + index.html "
                                      "(no Grafana needed)")
    s.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    s.add_argument("--exporter", help="which clickhouse exporter's store (default: the first)")
    s.add_argument("--out", default="otelproc-report", help="output directory (default otelproc-report)")
    s.add_argument("--dashboards", help="comma-separated subset of overview,patterns,anomalies,service,alerts")
    s.add_argument("--demo", action="store_true", help="first fill the store with a simulated 2 h demo run")
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("warmup", help="compile the Numba kernels now (otherwise the first serve/demo does it, "
                                      "about a minute of CPU time; the compiled code is cached)")
    s.add_argument("--force", action="store_true", help="run the warm-up even if this version already did")
    s.set_defaults(fn=cmd_warmup)

    s = sub.add_parser("demo", help="run the full pipeline on simulated traffic with scripted incidents")
    s.add_argument("--duration", type=float, default=60.0, help="wall-clock seconds of traffic (default 60)")
    s.add_argument("--speed", type=float, default=0.0,
                   help="event seconds per wall second (default 0: 3 h of event time in --duration)")
    s.add_argument("--rate", type=float, default=0.0,
                   help="target logs/s; reached with more instances per service (default 0: one instance, "
                        "about 41 x speed logs/s)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--dir", default="otelproc-demo", help="demo directory: config, store, summary.json")
    s.add_argument("--rules", default=str(defaults.ALERT_RULES),
                   help="alert rules and routes to use (default: the shipped ones; receivers are replaced by "
                        "the demo's webhook sink)")
    s.add_argument("--check", action="store_true", help="exit 1 unless every incident was detected and alerted")
    s.add_argument("--log-level", default="warn", choices=("debug", "info", "warn", "error"))
    s.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    from otelproc.warmup import configure_cache

    configure_cache()  # before anything imports Numba
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print(f"otelproc {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`otelproc tail | head`): stop quietly, and keep the interpreter's final
        # flush of stdout from failing too
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 141  # 128 + SIGPIPE, what a shell reports for a writer cut off by a pipe
    except Exception as e:  # noqa: BLE001 - no traceback reaches a user; OTELPROC_DEBUG=1 shows it
        if os.environ.get("OTELPROC_DEBUG"):
            raise
        print(f"otelproc {args.command}: {type(e).__name__}: {one_line_error(str(e))} "
              f"(set OTELPROC_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
