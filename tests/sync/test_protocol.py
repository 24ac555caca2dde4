"""The sync wire protocol, and a fuzz test against a real server socket."""

from __future__ import annotations

import json
import logging
import math

import pytest
import zmq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mhtest.sync import SyncClient, SyncServer, protocol
from mhtest.sync.protocol import ProtocolError, parse_endpoint, parse_request

pytestmark = pytest.mark.timeout(120)


def _frame(**fields) -> bytes:
    return json.dumps({"v": 1, "id": 1, **fields}).encode()


def test_parse_request_accepts_a_valid_barrier() -> None:
    req = parse_request(_frame(op="barrier", name="b", count=3, timeout=2.5))
    assert (req.op, req.name, req.count, req.timeout) == ("barrier", "b", 3, 2.5)


def test_hello_names_its_group_or_joins_the_common_one() -> None:
    assert parse_request(_frame(op="hello", participant="a", group="g")).group == "g"
    for common in ({}, {"group": ""}, {"group": None}):
        assert parse_request(_frame(op="hello", participant="a", **common)).group == ""


def test_an_oversized_request_keeps_its_id_for_the_refusal() -> None:
    frame = b'{"v":1,"id":42,"op":"post","name":"p","data":"%s"}' % (
        b"x" * protocol.MAX_MESSAGE_BYTES
    )
    with pytest.raises(ProtocolError, match="exceeds the 4 MiB") as refused:
        parse_request(frame)
    assert refused.value.request_id == 42


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (b"\xff\x00", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 1} {"v": 1}', "extra data after the object"),
        (json.dumps({"v": 1, "op": "ping"}).encode(), "missing integer id"),
        (_frame(v=2, op="ping"), "protocol version 2 not supported"),
        (_frame(op="eval"), "unknown operation 'eval'"),
        (_frame(op=["barrier"]), "unknown operation \\['barrier'\\]"),
        (_frame(op="barrier", name="", timeout=1), "name must be a non-empty string"),
        (_frame(op="barrier", name="x" * 300, timeout=1), "at most 256"),
        (_frame(op="barrier", name="b", count=0, timeout=1), "count must be an integer"),
        (_frame(op="barrier", name="b", count=True, timeout=1), "count must be an integer"),
        (_frame(op="barrier", name="b", timeout=-1), "timeout must be a number"),
        (b'{"v":1,"id":1,"op":"wait","name":"b","timeout":NaN}', "NaN is not allowed"),
        (_frame(op="hello", participant=7), "participant must be a non-empty string"),
        (_frame(op="hello", participant="a", group=["g"]), "group must be a non-empty string"),
        (b'{"v":1,"id":1,"op":"post","name":"b","data":[Infinity]}', "Infinity is not allowed"),
        (b" " * (protocol.MAX_MESSAGE_BYTES + 1), "exceeds"),
    ],
)
def test_parse_request_refuses_bad_messages(frame: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse_request(frame)


def test_parse_endpoint() -> None:
    assert parse_endpoint("tcp://10.0.0.1:5555") == ("10.0.0.1", 5555)
    assert parse_endpoint("5555") == ("127.0.0.1", 5555)
    assert parse_endpoint(":5555") == ("127.0.0.1", 5555)
    assert parse_endpoint("0.0.0.0") == ("0.0.0.0", 0)
    for bad in ("host:99999", "host:port", "udp://h:1", "[::1]:5"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


# -- fuzzing a real server ----------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
MESSAGES = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1] * 8 + [0, 2, "1", None]),
        "id": st.integers(1, 2**40) | st.integers(-(2**70), 2**70) | st.text(max_size=3),
        "op": st.sampled_from(sorted(protocol.OPS)) | st.text(max_size=10) | JSON_VALUES,
    },
    optional={
        "name": st.text(max_size=300) | st.integers() | st.none(),
        "participant": st.text(max_size=300) | st.integers(),
        "group": st.text(max_size=300) | st.integers() | st.none(),
        "count": st.integers(-5, 2**40) | st.booleans() | st.floats() | st.none(),
        "timeout": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 10**9),
        "heartbeat": st.floats(allow_nan=True, allow_infinity=True),
        "data": JSON_VALUES,
        "reason": JSON_VALUES,
    },
)
FRAMES = st.one_of(
    st.lists(st.binary(max_size=300), min_size=0, max_size=4),
    st.lists(MESSAGES.map(lambda m: json.dumps(m).encode()), min_size=1, max_size=3),
    MESSAGES.map(lambda m: [json.dumps(m).encode()]),
)
PROBE = protocol.encode({"id": 987654321, "op": "post", "name": "probe"})
HELLO = protocol.encode({"id": 1, "op": "hello", "participant": "fuzz", "heartbeat": 60})


class _Errors(logging.Handler):
    """Collects the server's ERROR records: a message it could not handle is a bug."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def fuzz_target():
    errors = _Errors()
    logging.getLogger("mhtest.sync").addHandler(errors)
    with SyncServer(expected=1) as server:  # count=None completes at once: more paths run
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(server.address)
        try:
            yield server, sock, errors
        finally:
            sock.close(0)
            ctx.term()
            logging.getLogger("mhtest.sync").removeHandler(errors)


def _probe(sock) -> dict:
    """The server still answers this connection (and has handled everything sent before)."""
    sock.send(PROBE)
    deadline_ms = 5000
    while sock.poll(deadline_ms):
        reply = json.loads(sock.recv())
        if reply.get("id") == 987654321:
            return reply
    raise AssertionError("the sync server stopped answering")


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=FRAMES)
def test_random_frames_never_break_the_server(fuzz_target, frames: list[bytes]) -> None:
    server, sock, errors = fuzz_target
    errors.records.clear()
    sock.send(HELLO)  # most examples then speak as a known participant
    if frames:
        sock.send_multipart(frames)
    _probe(sock)
    assert server._thread is not None and server._thread.is_alive()
    assert not errors.records, [r.getMessage() for r in errors.records]


def test_oversized_messages_are_dropped_with_a_log_line(fuzz_target, caplog) -> None:
    server, sock, _ = fuzz_target
    with caplog.at_level(logging.WARNING, logger="mhtest.sync"):
        sock.send(b"{" + b" " * protocol.MAX_MESSAGE_BYTES + b"}")
        _probe(sock)
    assert any("exceeds" in r.getMessage() for r in caplog.records)
    sock.send(protocol.encode({"id": 2, "op": "bye"}))  # forget what the fuzzing left behind
    _probe(sock)
    # Beyond the socket's limit ZeroMQ drops the connection; the server carries on.
    sock.send(b" " * (protocol.SOCKET_MAX_BYTES + 10))
    with SyncClient(server.address, "after-fuzz", count=1, connect_timeout=5) as client:
        assert client.exchange("alive", math.pi) == {"after-fuzz": math.pi}


def _outcome(parse, frame: bytes):
    try:
        req = parse(frame)
    except ProtocolError as exc:
        return ("error", str(exc), exc.request_id)
    return ("ok", req)


_IDS = st.one_of(
    st.integers(0, 10**20).map(str),
    st.sampled_from(["007", "0", "-1", "1.0", "1e3", " 5", "", "12345678901234567890"]),
)
_RESTS = st.one_of(
    st.sampled_from(
        [
            ',"op":"barrier","name":"b","count":null,"timeout":60.0}',
            ',"op":"barrier","name":"b","count":2,"timeout":1}',
            ',"op":"barrier","name":"b","count":2,"timeout":1,"id":9}',
            ',"op":"barrier","name":"id","timeout":1}',
            ',"op":"barrier","name":"b","timeout":1,"v":2}',
            ',"op":"wait","name":"b","count":true,"timeout":1}',
            ',"op":"exchange","name":"b","data":[1],"timeout":1}',
            ',"op":"lock","name":"' + "x" * 2000 + '","timeout":1}',
            ',"op":"lock","name":"b","timeout":1,"pad":"' + "x" * 2000 + '"}',
            ',"op":"ping"}',
            ',"op":"unlock","name":"b"} junk',
            "}",
        ]
    ),
    st.text(max_size=40).map(lambda t: "," + t),
)


@settings(max_examples=400, deadline=None)
@given(ids=st.lists(_IDS, min_size=1, max_size=4), rest=_RESTS)
@example(ids=["9", "5"], rest=',"op":"barrier","name":"b","count":2,"timeout":1,"id":9}')
@example(ids=["7", "007"], rest=',"op":"barrier","name":"b","count":null,"timeout":60.0}')
def test_cached_parser_answers_as_parse_request(ids: list[str], rest: str) -> None:
    """The server's request cache (RequestParser) never changes what a frame means."""
    parser = protocol.RequestParser()
    for request_id in ids:  # the same rest again and again, as a barrier loop sends it
        frame = ('{"v":1,"id":' + request_id + rest).encode()
        assert _outcome(parser.parse, frame) == _outcome(parse_request, frame)


def test_cached_parser_keeps_no_large_or_data_requests() -> None:
    parser = protocol.RequestParser()
    for i in range(1, 4):
        parser.parse(
            b'{"v":1,"id":%d,"op":"lock","name":"b","timeout":1,"pad":"%s"}' % (i, b"x" * 2000)
        )
        parser.parse(b'{"v":1,"id":%d,"op":"exchange","name":"b","data":%d,"timeout":1}' % (i, i))
        parser.parse(b'{"v":1,"id":%d,"op":"barrier","name":"b","timeout":1}' % i)
    assert list(parser._known) == [b',"op":"barrier","name":"b","timeout":1}']


def test_reply_frames_are_read_without_decoding_and_agree_with_decoding() -> None:
    ok = protocol.reply_ok(41, {"generation": 3})
    error = protocol.reply_error(42, "timeout", "barrier 'b' timed out", arrived=["h1"])
    assert protocol.reply_id(ok) == 41 and protocol.is_success(ok)
    assert protocol.reply_id(error) == 42 and not protocol.is_success(error)
    assert ok.startswith(protocol.reply_prefix(41)) and not ok.startswith(protocol.reply_prefix(4))
    # A reply written another way (spaces, another key order) is decoded instead.
    other = b'{"id": 43, "v": 1, "ok": true, "result": null}'
    assert protocol.reply_id(other) == 43 and not protocol.is_success(other)
    assert protocol.reply_id(b"not json") is None
    assert protocol.reply_id(b'{"v":1,"id":"7","ok":true}') is None
