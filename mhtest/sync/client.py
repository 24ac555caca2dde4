"""The sync client a test uses: barriers, data exchange, post/wait and locks.

    with SyncClient("tcp://127.0.0.1:5555", "h1", count=2) as sync:
        sync.barrier("server-started")
        ports = sync.exchange("ports", {"port": 8080})   # {"h1": {...}, "h2": {...}}

Every wait has a timeout; the server enforces it and says who arrived and who did not.
The socket plumbing (one DEALER socket, heartbeats, replies matched to requests) is in
mhtest.sync.channel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Any, Iterator, Mapping

from mhtest.sync import protocol
from mhtest.sync.channel import Channel
from mhtest.sync.errors import SyncAborted, SyncError, error_from_reply
from mhtest.sync.keys import ClientKeys

LOG = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0
DEFAULT_HEARTBEAT = 0.5
CONNECT_TIMEOUT = 30.0  # how long a new client waits for the server to answer its hello
SERVER_SILENCE_BEATS = 10  # heartbeats without a word from the server before it counts as gone
REPLY_GRACE = 5.0  # extra time past a call's timeout before the server counts as gone
MAX_CACHED_BARRIERS = 256  # encoded barrier requests kept per client
ENV_ADDRESS = "MHTEST_SYNC_ADDRESS"
ENV_PARTICIPANT = "MHTEST_SYNC_PARTICIPANT"
ENV_COUNT = "MHTEST_SYNC_COUNT"
ENV_KEYS = "MHTEST_SYNC_KEYS"
ENV_GROUP = "MHTEST_SYNC_GROUP"


class SyncClient:
    """A participant of a sync server (see module docstring).

    `group` names the runs it meets on a server several runs share ("" the common group);
    `keys_dir` (a keys directory) or `curve` (mhtest.sync.keys.ClientKeys, e.g. a
    multi-host run's) makes it speak CurveZMQ. A `transient` client is a short-lived
    connection speaking for `participant` (one `mhtest sync` command of a worker): when
    it closes, its own waits and locks go, but the participant has not left.
    """

    def __init__(
        self,
        address: str,
        participant: str,
        *,
        keys_dir: str | os.PathLike | None = None,
        curve: ClientKeys | None = None,
        count: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        heartbeat: float = DEFAULT_HEARTBEAT,
        connect_timeout: float | None = None,
        context: Any = None,
        group: str = "",
        transient: bool = False,
    ) -> None:
        try:
            host, port = protocol.parse_endpoint(address, default_port=-1)
        except ValueError as exc:
            raise SyncError(f"sync client: bad server address {exc}") from None
        if port <= 0:
            raise SyncError(f"sync client: {address!r} needs a port (HOST:PORT)")
        if not participant or len(participant) > protocol.MAX_NAME_CHARS:
            raise SyncError(f"sync client: bad participant name {participant!r}")
        if count is not None and not 1 <= count <= protocol.MAX_COUNT:
            raise SyncError(f"sync client: count must be 1 to {protocol.MAX_COUNT}")
        if len(group) > protocol.MAX_NAME_CHARS:
            raise SyncError(f"sync client: group names are at most {protocol.MAX_NAME_CHARS}")
        self.address = f"tcp://{host}:{port}"
        self.participant = participant
        self.group = group
        self.count = count
        self.timeout = float(timeout)
        if not 0 < self.timeout <= protocol.MAX_TIMEOUT:
            raise SyncError(f"timeout must be above 0 and at most {protocol.MAX_TIMEOUT:g} s")
        self.heartbeat = float(heartbeat)
        if keys_dir is not None:
            if curve is not None:
                raise SyncError("sync client: give a keys directory or keys, not both")
            from mhtest.sync.keys import load_client_keys

            curve = load_client_keys(keys_dir, participant)
        self._closed = False
        # Without a word from the server for this long, a call counts it as gone.
        self._silence = max(SERVER_SILENCE_BEATS * self.heartbeat, 2.0)
        self._barriers: dict[tuple, bytes] = {}
        #: The abort the server told of while this client was not waiting (see on_abort).
        self.aborted: SyncAborted | None = None
        #: Called with that SyncAborted, from the client's reading thread, when it arrives.
        self.on_abort: Any = None
        #: The participant names the server expects (a multi-host run's workers), or None.
        self.expected: list[str] | None = None
        self._channel = Channel(self.address, participant, self.heartbeat, curve, context)
        self._channel.on_notice = self._notice
        wait = CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
        hello: dict[str, Any] = {"participant": participant, "heartbeat": self.heartbeat}
        if group:
            hello["group"] = group
        if transient:
            hello["transient"] = True
        try:
            welcome = self._call("hello", wait, silence=wait, count=count, **hello)
            if isinstance(welcome, dict) and isinstance(welcome.get("expected"), list):
                self.expected = [str(n) for n in welcome["expected"]]
            self._channel.joined()
        except BaseException:
            self.close(say_bye=False)
            raise

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        default_participant: str | None = None,
        transient: bool = False,
    ) -> SyncClient | None:
        """A client configured by MHTEST_SYNC_* variables, or None when no address is set.

        The participant is MHTEST_SYNC_PARTICIPANT, else `default_participant`, else
        "HOSTNAME-PID" (unique, but not stable from run to run). MHTEST_SYNC_GROUP is its
        group. Its CurveZMQ keys are MHTEST_SYNC_SERVER_KEY, _CLIENT_KEY and _CLIENT_SECRET
        (a multi-host run's, mhtest.sync.keys.RunKeys.client_env) when set, else those of
        the keys directory MHTEST_SYNC_KEYS.
        """
        env = os.environ if environ is None else environ
        address = env.get(ENV_ADDRESS, "").strip()
        if not address:
            return None
        participant = env.get(ENV_PARTICIPANT, "").strip() or default_participant
        if not participant:
            participant = f"{socket.gethostname()}-{os.getpid()}"
            LOG.info("%s not set: this participant is %s", ENV_PARTICIPANT, participant)
        count_text = env.get(ENV_COUNT, "").strip()
        if count_text and not count_text.isdigit():
            raise SyncError(f"{ENV_COUNT}={count_text!r} is not a number")
        from mhtest.sync.keys import client_keys_from_env

        curve = client_keys_from_env(env)
        keys = env.get(ENV_KEYS, "").strip() or None if curve is None else None
        return cls(
            address,
            participant,
            keys_dir=keys,
            curve=curve,
            count=int(count_text) if count_text else None,
            group=env.get(ENV_GROUP, "").strip(),
            transient=transient,
        )

    # -- the API -------------------------------------------------------------------------

    def barrier(self, name: str, count: int | None = None, timeout: float | None = None) -> None:
        """Return when `count` participants (default: all of the job) reached `name`."""
        t = self.timeout if timeout is None else self._timeout(timeout)
        # The hot loop of many tests: the request's bytes are built once per (name, count,
        # timeout) and a success reply is recognised without decoding it.
        key = (name, count, t)
        body = self._barriers.get(key)
        if body is None:
            body = protocol.request_body("barrier", {"name": name, "count": count, "timeout": t})
            if len(self._barriers) < MAX_CACHED_BARRIERS:
                self._barriers[key] = body
        if self._closed:
            raise SyncError(f"sync client {self.participant} is closed")
        frame = self._channel.call("barrier", body, t + REPLY_GRACE, self._silence, name)
        if not protocol.is_success(frame):
            self._result("barrier", frame)

    def exchange(
        self, name: str, data: Any, count: int | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Barrier that also swaps data: returns {participant: data} of everyone, self included."""
        t = self._timeout(timeout)
        return self._call("exchange", t, name=name, data=data, count=count, timeout=t)

    def post(self, name: str, data: Any = None) -> None:
        """Publish `data` under `name` (does not wait for anybody)."""
        self._call("post", self.timeout, name=name, data=data)

    def wait(
        self,
        name: str,
        count: int | None = None,
        timeout: float | None = None,
        senders: list[str] | None = None,
    ) -> dict[str, Any]:
        """Wait until `count` participants posted `name`: returns {participant: data}.

        With `senders`, only their posts count, and `count` defaults to all of them
        (else to 1). The result holds every post of `name` all the same.
        """
        t = self._timeout(timeout)
        fields: dict[str, Any] = {"name": name, "count": count, "timeout": t}
        if senders is not None:
            fields["senders"] = list(senders)
        return self._call("wait", t, **fields)

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the job-wide lock `name` for the `with` block (released if the holder dies)."""
        t = self._timeout(timeout)
        self._call("lock", t, name=name, timeout=t)
        try:
            yield
        except BaseException:
            try:
                self._call("unlock", self.timeout, name=name)
            except SyncError as exc:  # the block's own error is the one to see
                LOG.warning("could not release lock %r: %s", name, exc)
            raise
        self._call("unlock", self.timeout, name=name)

    def abort(self, reason: str) -> None:
        """Abort every other participant's waits with `reason`."""
        self._call("abort", self.timeout, reason=str(reason))

    def close(self, say_bye: bool = True) -> None:
        """Leave the server (others waiting on us are told at once) and close the socket."""
        if self._closed:
            return
        self._closed = True
        self._channel.close(say_bye)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        t = self.timeout if timeout is None else float(timeout)
        if not 0 < t <= protocol.MAX_TIMEOUT:
            raise SyncError(f"timeout must be above 0 and at most {protocol.MAX_TIMEOUT:g} s")
        return t

    def _call(self, op: str, wait: float, silence: float | None = None, **fields: Any) -> Any:
        if self._closed:
            raise SyncError(f"sync client {self.participant} is closed")
        frame = self._channel.request(op, wait + REPLY_GRACE, silence or self._silence, **fields)
        return self._result(op, frame)

    def _notice(self, frame: bytes) -> None:
        """A notice the server pushed: the run was aborted (someone died, left or aborted)."""
        try:
            reply = protocol.decode(frame)
        except protocol.ProtocolError:
            return
        error = error_from_reply(reply.get("error") or {})
        if isinstance(error, SyncAborted) and self.aborted is None:
            self.aborted = error
            if self.on_abort is not None:
                self.on_abort(error)

    @staticmethod
    def _result(op: str, frame: bytes) -> Any:
        """The result in a reply frame, or the error it carries raised."""
        try:
            reply = protocol.decode(frame)
        except protocol.ProtocolError as exc:
            raise SyncError(f"{op}: malformed reply from the sync server: {exc}") from None
        if reply.get("ok"):
            return reply.get("result")
        raise error_from_reply(reply.get("error") or {})
