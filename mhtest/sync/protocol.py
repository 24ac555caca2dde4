"""The sync wire protocol: versioned JSON objects, one per ZeroMQ frame. Never pickle.

A client (DEALER) sends one frame holding a request:

    {"v": 1, "id": 7, "op": "barrier", "name": "started", "count": 2, "timeout": 30}

and the server (ROUTER) answers with the same id:

    {"v": 1, "id": 7, "ok": true, "result": ...}
    {"v": 1, "id": 7, "ok": false, "error": {"type": "timeout", "message": ..., ...}}

Operations and their fields:

- hello: participant, heartbeat (seconds between the client's pings), count (optional
  default), group (optional: runs that share a server meet only within their group),
  transient (optional: a short-lived connection that speaks for the participant, such as
  one `mhtest sync` command of a shell worker; its leaving does not mean the participant
  has gone, and several may speak for one name at once)
- barrier: name, count, timeout;  exchange: name, data, count, timeout
- post: name, data;  wait: name, count, timeout, senders (optional: wait for the posts of
  these participants only; `count` of them, default all)
- lock: name, timeout;  unlock: name
- abort: reason;  ping (answered by a "pong" without id);  bye

A request is exactly one frame of at most MAX_MESSAGE_BYTES, and so is a reply: what an
exchange or a name's posts return must fit in one message too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

VERSION = 1
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # larger requests are refused, larger replies never made
SOCKET_MAX_BYTES = 2 * MAX_MESSAGE_BYTES  # ZeroMQ drops the connection beyond this
REPLY_OVERHEAD = 64  # a reply's bytes around its result: '{"v":1,"id":…,"ok":true,"result":…}'
MAX_NAME_CHARS = 256
MAX_COUNT = 100_000
MAX_TIMEOUT = 7 * 24 * 3600.0

OPS_WITH_NAME = frozenset({"barrier", "exchange", "post", "wait", "lock", "unlock"})
OPS_WITH_TIMEOUT = frozenset({"barrier", "exchange", "wait", "lock"})
OPS_WITH_COUNT = frozenset({"barrier", "exchange", "wait", "hello"})
OPS = OPS_WITH_NAME | {"hello", "abort", "ping", "bye"}


class ProtocolError(ValueError):
    """A message that does not follow the protocol; `request_id` is set when known."""

    def __init__(self, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass
class Request:
    """One validated client request."""

    op: str
    id: int
    name: str = ""
    count: int | None = None
    timeout: float | None = None
    data: Any = None
    participant: str = ""
    heartbeat: float = 1.0
    reason: str = ""
    group: str = ""  # hello: the namespace to join ("" the common one)
    transient: bool = False  # hello: a short-lived connection speaking for the participant
    senders: list[str] | None = None  # wait: whose posts count (None: anybody's)


def encode(message: dict[str, Any]) -> bytes:
    """Serialise one message (adds the protocol version)."""
    return _ENCODER.encode({"v": VERSION, **message}).encode()


def encode_request(request_id: int, body: bytes) -> bytes:
    """A request frame from its id and `request_body()` (the rest, cacheable per call site)."""
    return b'{"v":%d,"id":%d,%s' % (VERSION, request_id, body)


def request_body(op: str, fields: dict[str, Any]) -> bytes:
    """Everything of a request but its version and id (for `encode_request`)."""
    return _ENCODER.encode({"op": op, **fields})[1:].encode()


def encode_value(value: Any) -> bytes:
    """Serialise one JSON value (a result shared by several replies is encoded once)."""
    return _ENCODER.encode(value).encode()


def encode_members(members: Mapping[str, bytes]) -> bytes:
    """A JSON object from its keys and already encoded values ({name: data} of an exchange)."""
    return b"{%s}" % b",".join(encode_value(k) + b":" + v for k, v in members.items())


def member_size(key: str, encoded: bytes) -> int:
    """The bytes `key` and its encoded value take in `encode_members`' object (comma included)."""
    return len(encode_value(key)) + len(encoded) + 2


def format_size(size: int) -> str:
    """A byte count for messages: "4 MiB", "3.7 MiB", "512 KiB", "80 bytes"."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: replies carrying them could not be encoded.
    raise ValueError(f"{name} is not allowed")


# Stateless codecs, built once: json.dumps/loads with options build one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def decode(frame: bytes) -> dict[str, Any]:
    """Parse one frame into a JSON object, or raise ProtocolError.

    An oversized frame is not parsed; its id, when it starts as mhtest writes requests,
    goes with the error so that the sender can be told.
    """
    if len(frame) > MAX_MESSAGE_BYTES:
        prefixed = _prefixed_id(frame)
        raise ProtocolError(
            f"message of {len(frame)} bytes exceeds the {format_size(MAX_MESSAGE_BYTES)} "
            "a sync message may carry",
            prefixed[0] if prefixed is not None else None,
        )
    try:
        text = frame.decode("utf-8")
        if text[:1].isspace():
            text = text.lstrip()
        # raw_decode: json.loads' own wrapper costs more than the parse of a small message
        message, end = _DECODER.raw_decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if end != len(text) and text[end:].strip():
        raise ProtocolError("not JSON: extra data after the object")
    if not isinstance(message, dict):
        raise ProtocolError("message is not a JSON object")
    return message


def _check_name(value: Any, what: str, request_id: int) -> str:
    if type(value) is not str or not value or len(value) > MAX_NAME_CHARS:
        raise ProtocolError(
            f"{what} must be a non-empty string of at most {MAX_NAME_CHARS} characters",
            request_id,
        )
    return value


def _check_count(value: Any, request_id: int) -> int | None:
    # type() rather than isinstance(): True is an int to isinstance, and not a count.
    if value is not None and (type(value) is not int or not 1 <= value <= MAX_COUNT):
        raise ProtocolError(f"count must be an integer from 1 to {MAX_COUNT}", request_id)
    return value


def _check_seconds(value: Any, what: str, request_id: int) -> float:
    # The comparison also refuses NaN and the infinity a literal like 1e400 decodes to.
    if type(value) not in (int, float) or not 0 < value <= MAX_TIMEOUT:
        raise ProtocolError(f"{what} must be a number of seconds above 0", request_id)
    return float(value)


def _check_senders(value: Any, request_id: int) -> list[str]:
    if type(value) is not list or not 0 < len(value) <= MAX_COUNT:
        raise ProtocolError(f"senders must be a list of 1 to {MAX_COUNT} names", request_id)
    return [_check_name(name, "a sender", request_id) for name in value]


def parse_request(frame: bytes) -> Request:
    """Decode and validate one client request, or raise ProtocolError.

    Written for speed (it runs for every message the server gets): one dict lookup per
    field, type() checks, no work for fields the operation does not have.
    """
    message = decode(frame)
    get = message.get
    request_id = get("id")
    if type(request_id) is not int:
        raise ProtocolError("missing integer id")
    if get("v") != VERSION:
        raise ProtocolError(
            f"protocol version {get('v')!r} not supported (this server speaks {VERSION})",
            request_id,
        )
    op = get("op")
    if type(op) is not str or op not in OPS:
        raise ProtocolError(f"unknown operation {op!r}", request_id)
    name, count, timeout = "", None, None
    if op in OPS_WITH_NAME:
        name = _check_name(get("name"), "name", request_id)
    if op in OPS_WITH_TIMEOUT:
        timeout = _check_seconds(get("timeout"), "timeout", request_id)
    if op in OPS_WITH_COUNT:
        count = _check_count(get("count"), request_id)
    req = Request(op, request_id, name, count, timeout, get("data"))
    if op == "hello":
        req.participant = _check_name(get("participant"), "participant", request_id)
        req.heartbeat = _check_seconds(get("heartbeat", 1.0), "heartbeat", request_id)
        group = get("group")
        if group is not None and group != "":
            req.group = _check_name(group, "group", request_id)
        req.transient = get("transient") is True
    elif op == "wait" and get("senders") is not None:
        req.senders = _check_senders(get("senders"), request_id)
    elif op == "abort":
        reason = get("reason", "")
        req.reason = reason if isinstance(reason, str) else str(reason)
    return req


_PREFIX = b'{"v":%d,"id":' % VERSION
_CACHEABLE_OPS = frozenset({"barrier", "wait", "lock", "unlock", "ping"})
_START = len(_PREFIX)
MAX_CACHED_REQUESTS = 4096
MAX_CACHED_BYTES = 1024  # a larger request is parsed every time, never kept
MAX_ID_DIGITS = 18


def _prefixed_id(frame: bytes) -> tuple[int, int] | None:
    """(id, index of the comma after it) for a frame that starts as mhtest writes them:
    '{"v":1,"id":<digits>,' with no leading zero (which JSON would refuse). Else None.
    """
    if not frame.startswith(_PREFIX):
        return None
    comma = frame.find(b",", _START, _START + MAX_ID_DIGITS + 1)
    digits = frame[_START:comma]
    if comma > _START and digits.isdigit() and (digits[0] != 48 or comma == _START + 1):
        return int(digits), comma
    return None


class RequestParser:
    """parse_request() with a cache for the requests a client repeats, such as barriers.

    A client sends the same bytes for every call of one barrier but the id
    (`encode_request`), so a frame of the form '{"v":1,"id":<digits>,<rest>' whose
    <rest> parsed and validated before needs no JSON parse: only its id is read. Only
    requests without data are cached, and never a <rest> that mentions "id" or "v" again
    (a repeated key would win over the prefix's in JSON). Anything else takes the full
    parse, so the answers are those of parse_request() for every frame.
    """

    def __init__(self, max_entries: int = MAX_CACHED_REQUESTS) -> None:
        self._known: dict[bytes, tuple[str, str, int | None, float | None]] = {}
        self._max = max_entries

    def parse(self, frame: bytes) -> Request:
        """The validated request in `frame`, or ProtocolError (as parse_request)."""
        prefixed = _prefixed_id(frame)
        if prefixed is not None:
            request_id, comma = prefixed
            rest = frame[comma:]
            known = self._known.get(rest)
            if known is not None:
                return Request(known[0], request_id, known[1], known[2], known[3])
            req = parse_request(frame)
            if (
                req.op in _CACHEABLE_OPS
                and req.data is None
                and req.senders is None
                and req.id == request_id
                and len(self._known) < self._max
                and len(rest) <= MAX_CACHED_BYTES
                and b'"id"' not in rest
                and b'"v"' not in rest
            ):
                self._known[rest] = (req.op, req.name, req.count, req.timeout)
            return req
        return parse_request(frame)


def reply_prefix(request_id: int) -> bytes:
    """How every reply to `request_id` begins (the server writes "v" and "id" first)."""
    return b'{"v":%d,"id":%d,' % (VERSION, request_id)


def reply_id(frame: bytes) -> int | None:
    """The id a reply frame answers (or a request carries), read from its prefix (else
    parsed); None if malformed."""
    prefixed = _prefixed_id(frame)
    if prefixed is not None:
        return prefixed[0]
    try:
        request_id = decode(frame).get("id")
    except ProtocolError:
        return None
    return request_id if type(request_id) is int else None


def is_success(frame: bytes) -> bool:
    """True if `frame` is a success reply as this server writes it, without decoding it.

    False means "decode it to know": an error, or a reply written some other way.
    """
    prefixed = _prefixed_id(frame)
    return prefixed is not None and frame.startswith(b'"ok":true,', prefixed[1] + 1)


def reply_ok(request_id: int, result: Any = None) -> bytes:
    """A success reply."""
    return reply_ok_encoded(request_id, encode_value(result))


def reply_ok_encoded(request_id: int, result: bytes) -> bytes:
    """A success reply around an already encoded result."""
    return b'{"v":%d,"id":%d,"ok":true,"result":%s}' % (VERSION, request_id, result)


def reply_error(request_id: int, error_type: str, message: str, **details: Any) -> bytes:
    """An error reply; `error_type` is timeout, aborted, refused or invalid."""
    return encode(
        {
            "id": request_id,
            "ok": False,
            "error": {"type": error_type, "message": message, **details},
        }
    )


def parse_endpoint(
    text: str, *, default_host: str = "127.0.0.1", default_port: int = 0
) -> tuple[str, int]:
    """Split "[tcp://]HOST[:PORT]" (or ":PORT", "PORT") into (host, port); ValueError if bad."""
    rest = text.strip()
    if rest.startswith("tcp://"):
        rest = rest[len("tcp://") :]
    elif "://" in rest:
        raise ValueError(f"{text!r}: only tcp:// addresses are supported")
    if rest.isdigit():
        host, port_text = default_host, rest
    elif rest.startswith("[") and "]" in rest:
        raise ValueError(f"{text!r}: IPv6 addresses are not supported")
    elif ":" in rest:
        host, port_text = rest.rsplit(":", 1)
        host = host or default_host
    else:
        return rest or default_host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)
