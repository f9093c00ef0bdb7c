"""Schema: render the DDL templates in ``sql/`` and apply them, then run versioned migrations.

Every ``sql/<table>.sql`` file is a table (statements ``CREATE ... IF NOT EXISTS``), found
automatically: a component that needs a table drops its file next to ``otel_logs.sql``.
Migrations live in ``sql/migrations/NNNN_name.sql``; each is applied once per database and
recorded in ``otelproc_schema_migrations``. See ``otelproc/store/README.md`` for the
placeholder convention; in short:

    ${database}           the database, quoted
    ${table}              this file's table (``otel_logs`` can be renamed by config), quoted
    ${table(name)}        the configured name of the table whose file is ``name.sql``
    ${cluster}            ``ON CLUSTER `c``` when a cluster is configured, else nothing
    ${engine}             the configured engine (MergeTree), Replicated... on a cluster
    ${engine(Family(args))}  that engine family, Replicated... on a cluster
    ${ttl(Column)}        ``TTL Column + toIntervalDay(3)`` for a 72h TTL; nothing when TTL is 0
                          (Column may be an expression: ``${ttl(toDateTime(Timestamp))}``)
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from otelproc.store import Store, check_identifier, quote_identifier

__all__ = [
    "SQL_DIR", "MIGRATIONS_TABLE", "SchemaOptions", "SchemaReport", "table_files", "migration_files",
    "render", "split_statements", "engine_expr", "ttl_clause", "apply_schema", "apply_migrations",
    "ensure_schema", "table_columns", "schema_statements", "distributed_ddl", "local_options", "LOCAL_SUFFIX",
]

log = logging.getLogger("otelproc.store.schema")

SQL_DIR = Path(__file__).resolve().parent / "sql"
MIGRATIONS_TABLE = "otelproc_schema_migrations"
DEFAULT_ENGINE = "MergeTree"

_PLACEHOLDER_RE = re.compile(r"\$\{(\w+)(?:\((.*?)\))?\}")
_ENGINE_RE = re.compile(r"^\s*([A-Za-z]\w*)\s*(?:\((.*)\))?\s*$", re.S)
_CLUSTER_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_MIGRATION_RE = re.compile(r"^(\d{4})_(\w+)\.sql$")
# Replicated engines get the conventional replica path; {shard}/{replica} are server macros,
# {database}/{table} are filled in by ClickHouse itself.
REPLICA_ARGS = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"
# on a cluster: the Replicated table on each node is <name>_local, <name> is Distributed over it
LOCAL_SUFFIX = "_local"
SHARDING_KEY = "cityHash64(ServiceName)"


@dataclass(frozen=True)
class SchemaOptions:
    """What the templates are rendered with.

    database : the database every table lives in
    ttl      : seconds of retention for templates with ``${ttl(Column)}``; 0 = keep forever
    cluster  : ClickHouse cluster name; adds ``ON CLUSTER`` and Replicated engines ("" = none)
    engine   : the engine ``${engine}`` renders to (e.g. ``MergeTree``, ``ReplacingMergeTree(v)``)
    tables   : template name -> table name overrides (``{"otel_logs": "logs"}``)
    """

    database: str = "otel"
    ttl: float = 0.0
    cluster: str = ""
    engine: str = DEFAULT_ENGINE
    tables: Mapping[str, str] = field(default_factory=dict)

    def table_name(self, template: str) -> str:
        return self.tables.get(template, template)


@dataclass
class SchemaReport:
    """What ensure_schema did: tables ensured (template -> table name) and migrations applied now."""

    tables: dict[str, str]
    migrations_applied: list[str]


def table_files(sql_dir: Path = SQL_DIR) -> dict[str, Path]:
    """Template name (file stem) -> path of every ``<sql_dir>/*.sql``, in name order."""
    return {p.stem: p for p in sorted(Path(sql_dir).glob("*.sql"))}


def migration_files(sql_dir: Path = SQL_DIR) -> list[tuple[int, str, Path]]:
    """(version, name, path) of every ``<sql_dir>/migrations/NNNN_name.sql``, by version.

    Raises ValueError for a misnamed file or a repeated version number.
    """
    mdir = Path(sql_dir) / "migrations"
    out: list[tuple[int, str, Path]] = []
    seen: dict[int, str] = {}
    for p in sorted(mdir.glob("*.sql")) if mdir.is_dir() else []:
        m = _MIGRATION_RE.match(p.name)
        if not m:
            raise ValueError(f"migration file {p}: name must be NNNN_name.sql (four digits, then a name)")
        version = int(m.group(1))
        if version in seen:
            raise ValueError(f"migration files {seen[version]} and {p.name} have the same version {version:04d}")
        seen[version] = p.name
        out.append((version, p.stem, p))
    return out


def engine_expr(engine: str, cluster: str = "") -> str:
    """The ENGINE expression for ``engine`` (``Family`` or ``Family(args)``), Replicated on a cluster.

    >>> engine_expr("ReplacingMergeTree(Version)", "c")
    "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', Version)"
    """
    m = _ENGINE_RE.match(engine or "")
    if not m:
        raise ValueError(f"table engine must look like MergeTree or ReplacingMergeTree(Version), got {engine!r}")
    family, args = m.group(1), (m.group(2) or "").strip()
    if cluster and family.endswith("MergeTree") and not family.startswith("Replicated"):
        family = "Replicated" + family
        args = REPLICA_ARGS + (f", {args}" if args else "")
    return f"{family}({args})" if args or family.endswith("MergeTree") else family


def ttl_clause(column: str, ttl_seconds: float) -> str:
    """``TTL <column> + toInterval<Unit>(n)`` with the largest unit that divides the TTL; "" for 0.

    ``column`` is a DateTime column or expression from a template (``toDateTime(Timestamp)``).
    """
    if not column.strip() or ";" in column:
        raise ValueError(f"TTL column must be a column or expression, got {column!r}")
    seconds = int(round(ttl_seconds))
    if seconds <= 0:
        return ""
    for unit, size in (("Day", 86400), ("Hour", 3600), ("Minute", 60)):
        if seconds % size == 0:
            return f"TTL {column} + toInterval{unit}({seconds // size})"
    return f"TTL {column} + toIntervalSecond({seconds})"


def render(text: str, options: SchemaOptions, table: str | None = None, source: str = "<sql>") -> str:
    """Fill the ``${...}`` placeholders of one template (see the module docstring).

    ``table`` is the template name of a table file (None for migrations, where only
    ``${table(name)}`` is allowed). Raises ValueError naming the file and the placeholder.
    """
    if options.cluster and not _CLUSTER_RE.match(options.cluster):
        raise ValueError(f"cluster name must match [A-Za-z0-9_.-]+, got {options.cluster!r}")

    def fill(m: re.Match) -> str:
        name, arg = m.group(1), m.group(2)
        if name == "database" and arg is None:
            return quote_identifier(options.database, "database")
        if name == "table":
            if arg is None:
                if table is None:
                    raise ValueError(f"{source}: ${{table}} is only defined in table files; use ${{table(name)}}")
                return quote_identifier(options.table_name(table), "table")
            return quote_identifier(options.table_name(arg.strip()), "table")
        if name == "cluster" and arg is None:
            return f"ON CLUSTER `{options.cluster}`" if options.cluster else ""
        if name == "engine":
            return engine_expr(options.engine if arg is None else arg, options.cluster)
        if name == "ttl" and arg:
            return ttl_clause(arg.strip(), options.ttl)
        raise ValueError(f"{source}: unknown placeholder {m.group(0)}; known: ${{database}}, ${{table}}, "
                         f"${{table(name)}}, ${{cluster}}, ${{engine}}, ${{engine(Family(args))}}, ${{ttl(Column)}}")

    return _PLACEHOLDER_RE.sub(fill, text)


def split_statements(sql: str) -> list[str]:
    """Split a script on ``;`` outside quotes and ``--`` comments; drop empty/comment-only parts."""
    out, cur, i, n = [], [], 0, len(sql)
    quote: str | None = None
    while i < n:
        c = sql[i]
        if quote:
            cur.append(c)
            if c == "\\" and i + 1 < n:
                cur.append(sql[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c in "'`\"":
            quote = c
            cur.append(c)
        elif c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            cur.append(sql[i:j])
            i = j
            continue
        elif c == ";":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    keep = []
    for stmt in out:
        code = "\n".join(line for line in stmt.splitlines() if not line.strip().startswith("--")).strip()
        if code:
            keep.append(stmt.strip())
    return keep


def local_options(options: SchemaOptions, sql_dir: Path = SQL_DIR) -> SchemaOptions:
    """The options the table templates are rendered with: on a cluster every table becomes
    ``<name>_local`` (the Replicated table on each node) behind a Distributed ``<name>``."""
    if not options.cluster:
        return options
    names = {t: options.table_name(t) + LOCAL_SUFFIX for t in table_files(sql_dir)}
    return SchemaOptions(database=options.database, ttl=options.ttl, cluster=options.cluster, engine=options.engine,
                         tables=names)


def distributed_ddl(options: SchemaOptions, template: str) -> str:
    """``CREATE TABLE <name> ON CLUSTER c AS <name>_local ENGINE = Distributed(...)`` for one table.

    Rows are sharded by ``cityHash64(ServiceName)`` (every table has the column), so one
    service's logs, patterns and series live on one shard, as the collector's
    loadbalancing exporter keeps one service on one otelproc instance.
    """
    if not options.cluster:
        raise ValueError("distributed_ddl needs a cluster name")
    db = quote_identifier(options.database, "database")
    name = options.table_name(template)
    dist = quote_identifier(name, "table")
    local = quote_identifier(name + LOCAL_SUFFIX, "table")
    local_name = name + LOCAL_SUFFIX
    return (f"CREATE TABLE IF NOT EXISTS {db}.{dist} ON CLUSTER `{options.cluster}` AS {db}.{local} "
            f"ENGINE = Distributed({_sql_string(options.cluster)}, {_sql_string(options.database)}, "
            f"{_sql_string(local_name)}, {SHARDING_KEY})")


def _sql_string(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def schema_statements(options: SchemaOptions, sql_dir: Path = SQL_DIR) -> list[tuple[str, str]]:
    """Every DDL statement of the table templates as (template, statement), in the order they run.

    Without a cluster: the templates as rendered. With ``cluster``: each template rendered for
    ``<name>_local`` (ON CLUSTER, Replicated engines), then the Distributed ``<name>`` over it.
    """
    local = local_options(options, sql_dir)
    out: list[tuple[str, str]] = []
    for name, path in table_files(sql_dir).items():
        for stmt in split_statements(render(path.read_text(), local, table=name, source=str(path))):
            out.append((name, stmt))
        if options.cluster:
            out.append((name, distributed_ddl(options, name)))
    return out


def apply_schema(store: Store, options: SchemaOptions, sql_dir: Path = SQL_DIR) -> dict[str, str]:
    """Run every table template (idempotent: CREATE ... IF NOT EXISTS). Returns template -> table name
    (the name to insert into and query: the Distributed table on a cluster)."""
    done: dict[str, str] = {}
    for name, stmt in schema_statements(options, sql_dir):
        store.command(stmt)
        done[name] = options.table_name(name)
    return done


def apply_migrations(store: Store, options: SchemaOptions, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply every migration not yet recorded in ``otelproc_schema_migrations``; return their names.

    Migrations run after the table templates, so on a fresh database they meet tables that already
    have the newest shape: write them idempotently (``ADD COLUMN IF NOT EXISTS`` ...). Two processes
    migrating one server database at the same moment are not coordinated.
    """
    migrations = migration_files(sql_dir)
    table = quote_identifier(MIGRATIONS_TABLE)
    db = quote_identifier(options.database, "database")
    cluster = f"ON CLUSTER `{options.cluster}`" if options.cluster else ""
    store.command(
        f"CREATE TABLE IF NOT EXISTS {db}.{table} {cluster} (Version UInt32, Name String, Checksum String, "
        f"AppliedAt DateTime64(3) DEFAULT now64(3)) ENGINE = {engine_expr('ReplacingMergeTree', options.cluster)} "
        f"ORDER BY Version")
    applied = {int(v): c for v, c in store.query_rows(f"SELECT Version, Checksum FROM {db}.{table} FINAL")}
    done = []
    for version, name, path in migrations:
        text = path.read_text()
        checksum = hashlib.sha256(text.encode()).hexdigest()
        if version in applied:
            if applied[version] != checksum:
                log.warning("migration %s changed after it was applied (it is not re-applied); "
                            "write a new migration instead of editing an applied one", path.name)
            continue
        # on a cluster a migration alters the Replicated <name>_local tables; a Distributed table
        # created AS them afterwards has the new shape (existing Distributed tables: docs/scaling.md)
        for stmt in split_statements(render(text, local_options(options, sql_dir), table=None, source=str(path))):
            store.command(stmt)
        store.command(f"INSERT INTO {db}.{table} (Version, Name, Checksum) "
                      f"SELECT {{v:UInt32}}, {{n:String}}, {{c:String}}",
                      {"v": version, "n": name, "c": checksum})
        log.info("applied schema migration %s to database %s", name, options.database)
        done.append(name)
    return done


def ensure_schema(store: Store, options: SchemaOptions, sql_dir: Path = SQL_DIR) -> SchemaReport:
    """Create every table that is missing, then apply pending migrations. Safe at every start."""
    tables = apply_schema(store, options, sql_dir)
    return SchemaReport(tables=tables, migrations_applied=apply_migrations(store, options, sql_dir))


def table_columns(store: Store, table: str) -> dict[str, str]:
    """Column name -> ClickHouse type of ``table`` in the store's database, in table order ({} if absent)."""
    rows = store.query_rows("SELECT name, type FROM system.columns WHERE database = {db:String} "
                            "AND table = {t:String} ORDER BY position", {"db": store.database, "t": table})
    return {name: typ for name, typ in rows}
