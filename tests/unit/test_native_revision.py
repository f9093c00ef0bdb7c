"""native_at_revision: the revision-dependent parts of ClickHouse's NativeWriter (src/Formats/NativeWriter.cpp,
src/Core/BlockInfo.cpp) around chDB's revision-0 bytes. The independent check, a decoder written from
clickhouse-go's rules against a running otelproc, is tests/e2e/test_query_clients.py."""
from __future__ import annotations

import pytest

from otelproc.extensions.native_revision import NativeFormatError, native_at_revision

ONE_ROW = b"\x01\x01\x01a\x05UInt8\x07"          # 1 column, 1 row: a UInt8 = 7 (revision 0)
INFO = b"\x01\x00\x02\xff\xff\xff\xff"            # is_overflows = 0, bucket_num = -1


@pytest.fixture(scope="module")
def chdb_conn():
    from otelproc.store.embedded import import_chdb

    conn = import_chdb().connect(":memory:")
    yield conn
    conn.close()


def test_layout_per_revision():
    assert native_at_revision(ONE_ROW, 0) == ONE_ROW
    # LowCardinality era, before custom serialization: BlockInfo only
    assert native_at_revision(ONE_ROW, 54405) == INFO + b"\x00" + ONE_ROW
    # custom serialization (54454): one kind byte (0 = default) between the type and the data
    assert native_at_revision(ONE_ROW, 54460) == INFO + b"\x00" + b"\x01\x01\x01a\x05UInt8" + b"\x00" + b"\x07"
    # out-of-order buckets (54480): BlockInfo field 3, an empty vector
    assert native_at_revision(ONE_ROW, 54480) == INFO + b"\x03\x00\x00" + b"\x01\x01\x01a\x05UInt8\x00\x07"
    with pytest.raises(NativeFormatError, match="older than this endpoint supports"):
        native_at_revision(ONE_ROW, 54000)


def test_every_block_and_column_and_datetime_zones(chdb_conn):
    sql = ("SELECT number AS n, toString(number) AS s, toDateTime(number, 'Asia/Tokyo') AS t, "
           "[toLowCardinality(toString(number % 3))] AS a FROM numbers(70000)")
    data = chdb_conn.query(sql, "Native").bytes()
    out = native_at_revision(data, 54460, ["UInt64", "String", "DateTime('Asia/Tokyo')", "Array(LowCardinality(String))"])
    blocks = out.count(INFO + b"\x00")
    assert blocks == data.count(b"\x01n\x06UInt64") >= 2  # a BlockInfo per block
    assert out.count(b"\x16DateTime('Asia/Tokyo')\x00") == blocks  # the zone restored, then the kind byte
    assert len(out) == len(data) + blocks * (len(INFO) + 1 + 4) + blocks * (len("DateTime('Asia/Tokyo')") - 8)


@pytest.mark.parametrize("sql, why", [
    ("SELECT uniqState(number) AS s FROM numbers(3)", "cast it to String"),
    ("SELECT CAST(1 AS Dynamic) AS d", "cast it to String"),
])
def test_types_that_cannot_be_walked_name_the_column(chdb_conn, sql, why):
    with pytest.raises(NativeFormatError, match=why):
        native_at_revision(chdb_conn.query(sql, "Native").bytes(), 54460)


def test_malformed_bytes_are_an_error_not_a_crash(chdb_conn):
    data = chdb_conn.query("SELECT toString(number) AS s FROM numbers(100)", "Native").bytes()
    for cut in (3, len(data) // 2, len(data) - 1):
        with pytest.raises(NativeFormatError):
            native_at_revision(data[:cut], 54460)
