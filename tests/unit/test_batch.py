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


def test_event_name_defaults_to_empty_strings_without_per_record_work():
    b = sample(4)  # from_records without "event_name"
    assert b.event_name.to_pylist() == [""] * 4
    fields = {f: getattr(b, f) for f in b.__dataclass_fields__ if f != "event_name"}
    plain = LogBatch(**fields)  # a constructor that predates the field
    assert len(plain.event_name) == 4 and plain.event_name.buf.size == 0
    assert plain.event_name.off.tolist() == [0] * 5
    plain.check()
    assert len(LogBatch.empty().event_name) == 0


def test_event_name_from_records_check_concat_and_take():
    a = LogBatch.from_records([{"body": "x", "event_name": "browser.click"}, {"body": "y"},
                               {"body": "z", "event_name": "é.日本"}])
    assert a.event_name.to_pylist() == ["browser.click", "", "é.日本"]
    b = sample(2)  # no event names
    c = concat_batches([a, b, a])
    c.check()
    assert c.event_name.to_pylist() == ["browser.click", "", "é.日本", "", "", "browser.click", "", "é.日本"]
    t = c.with_columns(pattern_id=np.arange(8, dtype=np.uint64),
                       pattern_template=StringArray.from_pylist([f"t{i}" for i in range(8)])).take(np.array([7, 0, 3, 7]))
    t.check()
    assert t.event_name.to_pylist() == ["é.日本", "browser.click", "", "é.日本"]
    assert t.body.to_pylist() == ["z", "x", "line 0 ünïcode", "z"]
    assert t.columns["pattern_id"].tolist() == [7, 0, 3, 7]
    assert t.columns["pattern_template"].to_pylist() == ["t7", "t0", "t3", "t7"]
    assert list(t.service_names) == [c.service_names[i] for i in (7, 0, 3, 7)]
    assert t.log_attrs.to_pylist() == [c.log_attrs.row(i) for i in (7, 0, 3, 7)]


def test_check_rejects_event_name_of_wrong_length():
    from dataclasses import replace

    b = replace(sample(3), event_name=StringArray.from_pylist(["a", "b"]))
    with pytest.raises(ValueError, match="event_name has 2 rows, expected 3"):
        b.check()


def test_dict_string_array_reads_like_the_flat_array():
    from otelproc.batch import DictStringArray

    d = StringArray.from_pylist(["a <*>", "", "héllo", "unused"])
    col = DictStringArray(np.array([2, 0, 0, 1, 2], np.int32), d)
    flat = ["héllo", "a <*>", "a <*>", "", "héllo"]
    assert isinstance(col, StringArray) and len(col) == 5
    assert col.to_pylist() == flat and col[0] == "héllo" and col.get_bytes(1) == b"a <*>"
    # buf/off (materialised on demand) and to_arrow are those of the flat array
    assert StringArray(col.buf, col.off).to_pylist() == flat
    assert col.to_arrow().to_pylist() == flat
    t = col.take(np.array([4, 3]))
    assert isinstance(t, DictStringArray) and t.dictionary is d and t.to_pylist() == ["héllo", ""]
    arr = col.to_arrow_dictionary()
    assert arr.to_pylist() == flat and sorted(arr.dictionary.to_pylist()) == ["", "a <*>", "héllo"]  # no "unused"
    # repeated values (two slots with one template, dead slots all "") appear once: ClickHouse requires it
    dup = DictStringArray(np.array([0, 1, 2, 3, 1], np.int32), StringArray.from_pylist(["x", "", "x", ""]))
    arr = dup.to_arrow_dictionary()
    assert arr.to_pylist() == ["x", "", "x", "", ""] and sorted(arr.dictionary.to_pylist()) == ["", "x"]
    assert DictStringArray(np.zeros(0, np.int32), d).to_arrow_dictionary().to_pylist() == []
    # a distinct dictionary is sent as it is when records use at least half of it, else the used part
    dist = DictStringArray(np.array([2, 0, 2], np.int32), StringArray.from_pylist(["a", "b", "c"]), distinct=True)
    assert dist.to_arrow_dictionary().dictionary.to_pylist() == ["a", "b", "c"]
    assert dist.to_arrow_dictionary().to_pylist() == ["c", "a", "c"] and dist.take(np.array([1])).distinct
    sparse = DictStringArray(np.array([3, 3]), StringArray.from_pylist(["a", "b", "c", "d", "e"]), distinct=True)
    assert sparse.to_arrow_dictionary().dictionary.to_pylist() == ["d"]
    with pytest.raises(IndexError):
        DictStringArray(np.array([4], np.int32), d)
    with pytest.raises(TypeError):
        DictStringArray(np.array([0.5]), d)


def test_dict_string_array_through_concat_and_take():
    from otelproc.batch import DictStringArray, concat_strings

    d1 = StringArray.from_pylist(["x", "y"])
    d2 = StringArray.from_pylist(["z", "x", "w"])
    a, b, c = (DictStringArray(np.array([1, 0]), d1), DictStringArray(np.array([2, 0]), d2),
               DictStringArray(np.array([0]), d1))
    cat = concat_strings([a, b, c])
    assert isinstance(cat, DictStringArray) and cat.to_pylist() == ["y", "x", "w", "z", "x"]
    assert len(cat.dictionary) == 5  # d1 once (shared by a and c), then d2
    assert concat_strings([a, c]).dictionary is d1
    mixed = concat_strings([a, StringArray.from_pylist(["plain"])])
    assert type(mixed) is StringArray and mixed.to_pylist() == ["y", "x", "plain"]
    recs = [{"body": f"b{i}", "service": "s"} for i in range(2)]
    b1 = LogBatch.from_records(recs).with_columns(pattern_template=a)
    b2 = LogBatch.from_records(recs).with_columns(pattern_template=b)
    both = concat_batches([b1, b2])
    assert both.columns["pattern_template"].to_pylist() == ["y", "x", "w", "z"]
    assert both.take(np.array([2, 0])).columns["pattern_template"].to_pylist() == ["w", "y"]
