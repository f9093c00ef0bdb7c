"""Every LogQL string in the Loki API's fixtures and tests parses with the grammar Grafana's own query
editor uses (@grafana/lezer-logql from npm), so what otelproc is tested with is LogQL as Grafana writes
it; and the strings otelproc refuses as syntax errors are syntax errors there too.

Needs Node.js and `npm ci --prefix tests/e2e/js` (.ci/run does it); skips with the reason otherwise."""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from otelproc.extensions.loki import logql

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
JS_DIR = ROOT / "e2e" / "js"
FIXTURES = ROOT / "fixtures" / "loki_grafana_requests.json"
TEST_FILES = [ROOT / "unit" / "test_loki_api.py", ROOT / "unit" / "test_loki_grafana.py"]
# LogQL the tests use to show what otelproc refuses: valid LogQL (Grafana's grammar accepts it) that
# otelproc does not answer, and strings that are not LogQL at all
VALID_BUT_UNSUPPORTED = [
    '{service_name="api"} | label_format a=b',
    '{service_name="api"} | regexp "(?P<a>.)"',
    'sum_over_time({service_name="api"} | unwrap ms [1m])',
    '{service_name="api"} | json a="b"',
    'stddev(count_over_time({a="b"}[1m]))',
    '{service_name="api"} | unpack',
    '{service_name="worker"} | line_format "{{ .job | upper }}"',
]
NOT_LOGQL = ['{service_name="api"', 'count_over_time({service_name="api"})', "sum(", "{"]


def _lezer(queries: list[str]) -> dict[str, dict]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (the LogQL grammar check needs it)")
    if not (JS_DIR / "node_modules" / "@grafana" / "lezer-logql").is_dir():
        pytest.skip(f"@grafana/lezer-logql is not installed: npm ci --prefix {JS_DIR}")
    out = subprocess.run([node, str(JS_DIR / "parse_logql.mjs")], input=json.dumps(queries).encode(),
                         capture_output=True, timeout=120, check=True)
    return {r["query"]: r for r in json.loads(out.stdout)}


def _fixture_queries() -> list[str]:
    out = []
    for req in json.loads(FIXTURES.read_text())["requests"]:
        for key in ("query", "match[]"):
            text = req["params"].get(key, "")
            if text.strip():
                out.append(text.replace("$PATTERN", "<_> request <_> done"))
    return out


def _test_queries() -> list[str]:
    """String constants of the test files that otelproc's parser accepts as LogQL."""
    out = []
    for path in TEST_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip():
                try:
                    logql.parse(node.value)
                except logql.LogQLError:
                    continue
                out.append(node.value)
    return out


def test_fixture_and_test_queries_parse_with_grafanas_grammar():
    fixtures, tests = _fixture_queries(), _test_queries()
    assert len(fixtures) >= 20 and len(tests) >= 20
    results = _lezer(sorted(set(fixtures + tests)))
    bad = {q: r["error"] for q, r in results.items() if not r["ok"]}
    assert not bad, bad
    for q in fixtures:   # and otelproc parses them too
        logql.parse(q)


def test_refused_queries_agree_with_grafanas_grammar():
    results = _lezer(VALID_BUT_UNSUPPORTED + NOT_LOGQL)
    for q in VALID_BUT_UNSUPPORTED:
        assert results[q]["ok"], (q, results[q]["error"])
        with pytest.raises(logql.LogQLError, match="not supported|only literal text|with parameters"):
            logql.parse(q)
    for q in NOT_LOGQL:
        assert not results[q]["ok"], q
        with pytest.raises(logql.LogQLError, match="syntax error|unexpected"):
            logql.parse(q)
