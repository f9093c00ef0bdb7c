"""Query endpoint latency/throughput: clickhouse-connect through the clickhouse_query extension vs direct chDB,
and the requests Grafana's plugin (clickhouse-go, HTTP) sends: Native at client_protocol_version 0 vs 54460
(the revision rewrite), a DateTime time series (which adds a DESCRIBE for the column time zones), and how
long a 64 MiB gzip decompression bomb takes to be refused.

    NUMBA_CACHE_DIR=.numba_cache python benchmarks/query_endpoint.py /tmp/bench_store

The argument is a scratch chDB directory (database `bench` is recreated there)."""
import gzip, sys, time, urllib.error, urllib.request
from types import SimpleNamespace
import clickhouse_connect
from otelproc.component import Context
from otelproc.config import Secret
from otelproc.extensions.query_endpoint import QueryEndpoint, QueryEndpointConfig
from otelproc.store import open_store
if len(sys.argv) != 2:
    sys.exit("usage: query_endpoint.py <scratch chDB dir>")
path = sys.argv[1]
st = open_store(f"chdb://{path}", "bench")
st.command("CREATE TABLE IF NOT EXISTS t (id UInt64, body String, svc LowCardinality(String), ts DateTime64(9)) ENGINE=MergeTree ORDER BY id")
st.command("TRUNCATE TABLE t")
st.command("INSERT INTO t SELECT number, concat('GET /api/items/', toString(number), ' took ', toString(number % 500), 'ms'), ['a','b','c'][number % 3 + 1], now64(9) FROM numbers(200000)")
cfg = SimpleNamespace(exporters={"clickhouse": SimpleNamespace(endpoint=f"chdb://{path}", database="bench")})
ep = QueryEndpoint("q", QueryEndpointConfig(endpoint="127.0.0.1:0", allow_anonymous=True), Context(config=cfg)); ep.start()
h, p = ep.address
c = clickhouse_connect.get_client(host=h, port=p)
def best(fn, n=5):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return min(ts)
small = "SELECT svc, count() FROM t GROUP BY svc"
big = "SELECT id, body, svc, ts FROM t"
print("small query, endpoint     %.2f ms" % (1e3 * best(lambda: c.query(small))))
print("small query, direct chDB  %.2f ms" % (1e3 * best(lambda: st.query_arrow(small))))
print("200k rows query_arrow, endpoint %.0f ms" % (1e3 * best(lambda: c.query_arrow(big))))
print("200k rows query_arrow, direct   %.0f ms" % (1e3 * best(lambda: st.query_arrow(big))))
print("200k rows query (Native->py), endpoint %.0f ms" % (1e3 * best(lambda: c.query(big), 3)))
def go_style(sql, revision):  # clickhouse-go conn_http.go: query in the body, Native, client_protocol_version
    q = f"database=bench&default_format=Native&client_protocol_version={revision}&max_execution_time=60"
    return urllib.request.urlopen(urllib.request.Request(f"http://{h}:{p}/?{q}", data=sql.encode()), timeout=60).read()
series = ("SELECT toStartOfMinute(toDateTime(ts)) AS time, svc, count() AS n FROM t GROUP BY time, svc "
          "ORDER BY time")
for label, sql in (("200k rows Native", big), ("time series (DateTime) Native", series)):
    for revision in (0, 54460):
        print("%s, client_protocol_version=%d  %.1f ms" % (label, revision, 1e3 * best(lambda: go_style(sql, revision))))
bomb = gzip.compress(b" " * (64 << 20), 9)
def refused():
    try:
        urllib.request.urlopen(urllib.request.Request(f"http://{h}:{p}/", data=bomb,
                                                      headers={"Content-Encoding": "gzip"}), timeout=60)
    except urllib.error.HTTPError as e:
        assert e.code == 413
print("64 MiB gzip bomb (%d bytes) refused in %.1f ms" % (len(bomb), 1e3 * best(refused)))
ep.shutdown(); st.close()
