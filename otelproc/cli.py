"""``otelproc`` command line: serve · validate · sql · patterns."""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

DEFAULT_CONFIG = "config/otelproc.yaml"
log = logging.getLogger("otelproc.cli")


def _load(path: str):
    from otelproc.config import ConfigError, load_config

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

    cfg = _load(args.config)
    tl = cfg.service.telemetry
    setup_logging(tl.logs.level, tl.logs.encoding)
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
            metrics = MetricsServer(service.telemetry, tl.metrics.address, ready=lambda: service._started)
            log.info("metrics on http://%s/metrics", tl.metrics.address)
        if args.ready_file:  # lets tests and scripts know the ports are bound
            Path(args.ready_file).write_text(json.dumps(_ports(service)))
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
    from otelproc.exporters.clickhouse import open_exporter_store

    cfg = _load(path)
    chs = {k: v for k, v in cfg.exporters.items() if k.split("/", 1)[0] == "clickhouse"}
    if not chs:
        raise SystemExit(f"otelproc: {path} has no clickhouse exporter to query")
    if exporter is not None:
        if exporter not in chs:
            raise SystemExit(f"otelproc: no exporter {exporter!r}; clickhouse exporters: {', '.join(chs)}")
        return open_exporter_store(chs[exporter])
    return open_exporter_store(next(iter(chs.values())))


def cmd_sql(args: argparse.Namespace) -> int:
    store = _store_from_config(args.config, args.exporter)
    try:
        try:
            rows = store.query_rows(args.query)
        except Exception as e:
            print(f"otelproc: query failed: {e}", file=sys.stderr)
            return 1
        print_rows(list(rows.column_names), rows, args.format)
    finally:
        store.close()
    return 0


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
    from otelproc.patterns import mine_file

    try:
        templates = mine_file(args.file, csv_out=args.csv)
    except OSError as e:
        print(f"otelproc: {e}", file=sys.stderr)
        return 1
    print_rows(["count", "template"], [(c, t) for t, c in templates], args.format)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="otelproc", description="OpenTelemetry-native log analysis engine")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the pipelines of a config")
    s.add_argument("--config", default=DEFAULT_CONFIG)
    s.add_argument("--ready-file", help="write the bound ports as JSON here once serving")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("validate", help="check a config and report every error with its key path")
    s.add_argument("--config", default=DEFAULT_CONFIG)
    s.set_defaults(fn=cmd_validate)

    s = sub.add_parser("sql", help="run a query against the configured store and print the result")
    s.add_argument("query")
    s.add_argument("--config", default=DEFAULT_CONFIG)
    s.add_argument("--exporter", help="which clickhouse exporter's store (default: the first)")
    s.add_argument("--format", choices=("table", "json", "csv"), default="table")
    s.set_defaults(fn=cmd_sql)

    s = sub.add_parser("patterns", help="mine the templates of a file with one log body per line")
    s.add_argument("file")
    s.add_argument("--csv", help="write LineId,ClusterId,Template per line to this file")
    s.add_argument("--format", choices=("table", "json", "csv"), default="table")
    s.set_defaults(fn=cmd_patterns)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "otelproc" / "numba"))
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
