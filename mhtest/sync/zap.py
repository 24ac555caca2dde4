"""The sync server's ZAP handler: which CurveZMQ client keys may connect, and as whom.

libzmq asks the handler bound at inproc://zeromq.zap.01 in the socket's context about every
new CurveZMQ connection (ZAP, https://rfc.zeromq.org/spec/27/). The server polls this
handler's socket in its own loop, with no thread of its own, and each request is answered
at once from a table of accepted public keys. The answer's User-Id, the participant name a
key is bound to ("" when it is not), comes back on every frame of that connection.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

LOG = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"


class ZapHandler:
    """Answer libzmq's ZAP requests from `accepted`: {32-byte public key: User-Id}."""

    def __init__(self, context: Any, accepted: Mapping[bytes, str]) -> None:
        import zmq

        self._accepted = dict(accepted)
        self.socket = context.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        try:
            self.socket.bind(ZAP_ENDPOINT)
        except zmq.ZMQError:
            self.socket.close(0)
            raise
        self._again = zmq.Again

    def answer(self) -> None:
        """Answer every ZAP request waiting (a REP socket: one reply per request, in turn)."""
        while True:
            try:
                request = self.socket.recv_multipart(1)  # zmq.NOBLOCK
            except self._again:
                return
            self.socket.send_multipart(self._reply(request))

    def _reply(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6 or request[0] != ZAP_VERSION:
            LOG.warning("malformed ZAP request (%d frames): connection refused", len(request))
            request_id = request[1] if len(request) > 1 else b""
            return [ZAP_VERSION, request_id, b"500", b"malformed ZAP request", b"", b""]
        request_id, address, mechanism = request[1], request[3], request[5]
        credentials = request[6:]
        user = None
        if mechanism == b"CURVE" and credentials:
            user = self._accepted.get(credentials[0])
        if user is None:
            LOG.warning(
                "refused a sync client from %s: its CurveZMQ key is not one this server accepts",
                address.decode(errors="replace") or "?",
            )
            return [ZAP_VERSION, request_id, b"400", b"key not accepted", b"", b""]
        return [ZAP_VERSION, request_id, b"200", b"OK", user.encode(), b""]

    def close(self) -> None:
        self.socket.close(0)
