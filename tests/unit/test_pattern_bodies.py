"""Structured (JSON, logfmt, OTLP kvlist) and multi-line (stack trace) bodies: mined on their message
and on their exception with the frames nearest to the throw."""
from __future__ import annotations

import json
import random

import numpy as np

from otelproc.batch import StringArray
from otelproc.kernels.body_kind import KIND_JSON, KIND_LOGFMT, KIND_MULTILINE, KIND_PLAIN, body_kinds
from otelproc.patterns import mine_lines
from otelproc.patterns.bodies import DEFAULT_MESSAGE_FIELDS, mining_view


def _mine(bodies: list[str]):
    miner, slots = mine_lines(StringArray.from_pylist(bodies))
    return miner, slots, sorted({miner.template(s) for s in slots})


def _kinds_reference(body: bytes, fields) -> int:
    """body_kinds written plainly."""
    text = body.strip(b" \t\n\r\x0b\x0c")
    if len(text) >= 2 and text[:1] == b"{" and text[-1:] == b"}":
        return KIND_JSON
    tokens_at = [0] + [i + 1 for i in range(len(text) - 1) if text[i] in b" \t\n\r\x0b\x0c"]
    for i in tokens_at:
        for f in fields:
            f = f.encode()
            if text[i:i + len(f) + 1] == f + b"=" and i + len(f) < len(text):
                return KIND_LOGFMT
    return KIND_MULTILINE if b"\n" in text else KIND_PLAIN


def test_body_kinds_agree_with_the_reference():
    rng = random.Random(4)
    parts = [b"{", b"}", b"msg=", b"message=x", b" ", b"\n", b"a", b"=", b"\t", b"log", b"event=", b"xmsg=1", b"\"q\""]
    bodies = [b"".join(rng.choice(parts) for _ in range(rng.randint(0, 8))) for _ in range(5000)]
    bodies += [b'{"msg":"a"}', b"  {x}  ", b"{", b"msg=", b"level=info msg=hi", b"a\nb", b"a\n", b"\nmsg=x"]
    sa = StringArray.from_pylist(bodies)
    got = body_kinds(sa.buf, sa.off, list(DEFAULT_MESSAGE_FIELDS)).tolist()
    assert got == [_kinds_reference(b, DEFAULT_MESSAGE_FIELDS) for b in bodies]


def test_json_with_shuffled_keys_and_an_optional_trace_id_is_one_pattern():
    rng = random.Random(7)
    bodies = []
    for i in range(100):
        obj = {"level": "info", "ts": f"2026-12-08T01:{i % 60:02d}:00Z", "user": f"u{i}", "latency_ms": i * 3,
               "msg": f"user u{i} logged in from 10.1.0.{i}"}
        if i % 3 == 0:
            obj["trace_id"] = f"{rng.getrandbits(128):032x}"
        items = list(obj.items())
        rng.shuffle(items)
        bodies.append(json.dumps(dict(items)))
    miner, slots, templates = _mine(bodies)
    assert templates == ["user <*> logged in from <*>"], templates
    # the parameters are the message's
    sa = StringArray.from_pylist(bodies[:1])
    res = miner.learn(sa.buf, sa.off, np.zeros(1, np.int32), [""], with_params=True)
    assert res.params.to_pylist()[0] == "u0\x1f10.1.0.0\x1f"


def test_logfmt_and_json_without_a_message_field():
    bodies = [f'level=info ts=2026-12-08T01:00:0{i}Z msg="cache refreshed in {i} ms" entries={i * 10}'
              for i in range(5)]
    bodies += [f'msg="cache refreshed in {i} ms" level=warn' for i in range(5)]
    _, slots, templates = _mine(bodies)
    assert templates == ["cache refreshed in <*> ms"]
    # a JSON object without a message: its sorted key=value pairs (key order does not split it)
    bodies = [json.dumps({"b": 5, "a": "x"}), json.dumps({"a": "y", "b": 6}), json.dumps({"a": "z", "b": 0})]
    _, slots, templates = _mine(bodies)
    assert len(set(slots.tolist())) == 1 and templates == ["a=<*> b=<*>"]
    # plain text with a 'msg=' inside free text is not logfmt: mined as it is
    _, _, templates = _mine(["sending msg=hello to the queue", "sending msg=bye to the queue"])
    assert templates == ["sending msg=<*> to the queue"]


def test_otlp_kvlist_body_through_the_receiver_decoder_and_the_processor():
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    from otelproc.component import Context
    from otelproc.processors.patterns import PatternsProcessorConfig, factory
    from otelproc.receivers.decode import decode_protobuf
    from otelproc.telemetry import Telemetry

    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for i in range(20):
        rec = sl.log_records.add()
        rec.time_unix_nano = 1_700_000_000_000_000_000 + i
        kvs = [("message", f"order {1000 + i} shipped"), ("order_id", str(1000 + i))]
        if i % 2:
            kvs.append(("trace_id", f"{i:032x}"))
        random.Random(i).shuffle(kvs)
        for k, v in kvs:
            rec.body.kvlist_value.values.append(KeyValue(key=k))
            rec.body.kvlist_value.values[-1].value.string_value = v
    batch = decode_protobuf(req.SerializeToString()).batch

    class Sink:
        def consume(self, b):
            self.batch = b

    sink = Sink()
    proc = factory.create("patterns", PatternsProcessorConfig(), sink, Context(telemetry=Telemetry()))
    proc.start()
    proc.consume(batch)
    out = sink.batch
    assert len(set(out.columns["pattern_id"].tolist())) == 1
    assert out.columns["pattern_template"][0] == "order <*> shipped"
    # the body is stored as it came (its other fields stay queryable)
    assert json.loads(out.body[0])["order_id"] == "1000"


def _python_trace(depth: int, exc: str = "ValueError", value: int = 1) -> str:
    frames = [f'  File "/srv/app/lib{d}.py", line {10 + d}, in helper{d}\n    helper{d + 1}(x)' for d in range(depth)]
    top = ['  File "/srv/app/handlers.py", line 42, in handle\n    check(payload)',
           '  File "/srv/app/check.py", line 7, in check\n    validate(payload)',
           '  File "/srv/app/validate.py", line 3, in validate\n    raise {}("bad value {}")'.format(exc, value)]
    return "\n".join(["Traceback (most recent call last):", *frames, *top, f"{exc}: bad value {value}"])


def test_python_tracebacks_of_varying_depth_are_one_pattern_per_exception():
    bodies = [_python_trace(d, value=d) for d in range(1, 9)] + [_python_trace(d, "KeyError") for d in (2, 5)]
    _, slots, templates = _mine(bodies)
    assert len(set(slots[:8].tolist())) == 1 and len(set(slots.tolist())) == 2, templates
    assert any(t.startswith("Traceback (most recent call last):") and t.endswith("ValueError: bad value <*>")
               for t in templates)


def _java_trace(depth: int, value: int) -> str:
    top = ["\tat com.shop.orders.OrderService.place(OrderService.java:88)",
           "\tat com.shop.orders.OrderController.post(OrderController.java:41)",
           "\tat com.shop.web.Dispatcher.dispatch(Dispatcher.java:120)"]
    below = [f"\tat org.framework.Layer{d}.invoke(Layer{d}.java:{30 + d})" for d in range(depth)]
    return "\n".join([f"java.lang.IllegalStateException: order {value} already shipped", *top, *below,
                      "Caused by: java.io.IOException: broken pipe", "\tat sun.nio.Channel.write(Channel.java:12)",
                      f"\t... {depth + 3} more"])


def test_java_traces_whose_depth_varies_below_the_top_frames_are_one_pattern():
    bodies = [_java_trace(d, 100 + d) for d in (0, 3, 9, 20)]
    _, slots, templates = _mine(bodies)
    assert len(set(slots.tolist())) == 1, templates
    assert "IllegalStateException: order <*> already shipped" in templates[0] and "Caused by:" in templates[0]


def _go_panic(depth: int, index: int) -> str:
    below = [f"main.level{d}(...)\n\t/src/app/level.go:{20 + d} +0x{0x40 + d:x}" for d in range(depth)]
    return "\n".join([f"panic: runtime error: index out of range [{index}] with length 3", "",
                      "goroutine 1 [running]:",
                      "main.lookup(0xc000012345, 0x3)\n\t/src/app/lookup.go:14 +0x1d",
                      "main.handle(...)\n\t/src/app/handle.go:9",
                      "main.serve(0xc0000a2000)\n\t/src/app/serve.go:31 +0x5b",
                      *below, "main.main()\n\t/src/app/main.go:8 +0x25", "exit status 2"])


def test_go_panics_whose_depth_varies_below_the_top_frames_are_one_pattern():
    bodies = [_go_panic(d, 3 + d) for d in (0, 2, 7)]
    _, slots, templates = _mine(bodies)
    assert len(set(slots.tolist())) == 1, templates
    assert templates[0].startswith("panic: runtime error: index out of range [<*>] with length <*>")


def test_plain_bodies_are_left_alone():
    sa = StringArray.from_pylist(["a b c", "x=1 y=2", "{not closed", "one line\n"])
    buf, off, rows = mining_view(sa.buf, sa.off, DEFAULT_MESSAGE_FIELDS)
    assert buf is sa.buf and off is sa.off and len(rows) == 0
