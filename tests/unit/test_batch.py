"""LogBatch and its string/map columns."""
import numpy as np
import pyarrow as pa
import pytest

from otelproc.batch import AttrMap, LogBatch, StringArray, concat_batches


def sample(n=3, svc="api"):
    return LogBatch.from_records([
        {"time_ns": 1_700_000_000_000_000_000 + i, "observed_ns": 5, "severity_number": 9 + i, "severity_text": "INFO",
         "body": f"line {i} ünïcode", "service": svc, "attributes": {"k": str(i)},
         "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"} for i in range(n)],
        resource={"host.name": "h1"})


def test_string_array_roundtrip_take_and_arrow():
    s = StringArray.from_pylist(["a", "", "ünï", "last"])
    assert len(s) == 4 and s.to_pylist() == ["a", "", "ünï", "last"]
    assert s.take(np.array([3, 1, 2, 0])).to_pylist() == ["last", "", "ünï", "a"]
    assert s.take(np.array([1, 1])).to_pylist() == ["", ""]
    assert s.to_arrow().to_pylist() == ["a", "", "ünï", "last"]
    assert StringArray.empty(2).to_pylist() == ["", ""]
    with pytest.raises(TypeError):
        StringArray(np.zeros(1, np.int8), np.zeros(1, np.int64))


def test_attr_map_rows_take_arrow():
    m = AttrMap.from_pylist([{"a": "1", "b": "2"}, {}, {"c": "3"}])
    assert m.to_pylist() == [{"a": "1", "b": "2"}, {}, {"c": "3"}]
    assert m.take(np.array([2, 0, 2])).to_pylist() == [{"c": "3"}, {"a": "1", "b": "2"}, {"c": "3"}]
    arr = m.to_arrow()
    assert isinstance(arr, pa.MapArray) and arr.to_pylist()[0] == [("a", "1"), ("b", "2")]


def test_from_records_and_check():
    b = sample()
    b.check()
    assert len(b) == 3
    assert list(b.service_names) == ["api"] * 3
    assert b.resource_attrs.row(0) == {"host.name": "h1", "service.name": "api"}
    assert b.trace_id[0].tobytes().hex() == "0af7651916cd43dd8448eb211c80319c"
    assert b.body[1] == "line 1 ünïcode"


def test_event_time_falls_back_to_observed():
    b = LogBatch.from_records([{"time_ns": 0, "observed_ns": 7}, {"time_ns": 3, "observed_ns": 7}])
    assert b.event_ns.tolist() == [7, 3]


def test_concat_reindexes_resources_and_services():
    a, b = sample(2, "api"), sample(3, "db")
    a = a.with_columns(pattern_id=np.array([1, 2], np.uint64))
    b = b.with_columns(pattern_id=np.array([3, 4, 5], np.uint64))
    c = concat_batches([a, b])
    c.check()
    assert len(c) == 5
    assert list(c.service_names) == ["api", "api", "db", "db", "db"]
    assert c.resource_attrs.row(int(c.resource_index[4]))["service.name"] == "db"
    assert c.columns["pattern_id"].tolist() == [1, 2, 3, 4, 5]
    assert c.body.to_pylist() == a.body.to_pylist() + b.body.to_pylist()


def test_concat_carries_tables_and_findings():
    t = pa.table({"x": [1]})
    a = sample(1).with_table("log_patterns", t).with_findings(["f1"])
    b = sample(1).with_table("log_patterns", t).with_findings(["f2"])
    c = concat_batches([a, b])
    assert c.tables["log_patterns"].num_rows == 2 and c.findings == ["f1", "f2"]


def test_with_columns_checks_length():
    with pytest.raises(ValueError, match="has 2 rows"):
        sample(3).with_columns(pattern_id=np.zeros(2))
