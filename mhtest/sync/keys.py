"""CurveZMQ keys for the sync server and its clients: where they live, how to make them.

A keys directory (`--sync-keys DIR`, MHTEST_SYNC_KEYS) is laid out as:

    DIR/server.key                  the server's public key (every client needs it)
    DIR/server.key_secret           the server's secret key (the server's host only)
    DIR/clients/NAME.key            public keys the server accepts (every *.key there)
    DIR/clients/NAME.key_secret     a client's keypair; a client uses clients/<participant>
                                    if present, else clients/client

`create_keys(DIR)` writes a server keypair and one client keypair named "client". Any
client key listed there may join under any participant name.

A multi-host run needs no directory: `make_run_keys(names)` makes, in memory, a server
keypair and one client keypair per participant, and the server accepts each client key for
its own participant name only (see RunKeys). Secret keys never go to a file or a log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from mhtest.sync.errors import SyncError

ENV_SERVER_KEY = "MHTEST_SYNC_SERVER_KEY"
ENV_CLIENT_KEY = "MHTEST_SYNC_CLIENT_KEY"
ENV_CLIENT_SECRET = "MHTEST_SYNC_CLIENT_SECRET"
ENV_RUN_KEYS = (ENV_SERVER_KEY, ENV_CLIENT_KEY, ENV_CLIENT_SECRET)


@dataclass
class ClientKeys:
    """What a client needs to speak CurveZMQ to the server (keys in z85)."""

    public: bytes
    secret: bytes = field(repr=False)
    server_public: bytes = b""


@dataclass
class ServerKeys:
    """What the server needs: its keypair and the client keys it accepts.

    `accepted` maps a client's 32-byte public key to the participant name it is bound to,
    or to "" when it may join under any name.
    """

    public: bytes
    secret: bytes = field(repr=False)
    accepted: Mapping[bytes, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunKeys:
    """CurveZMQ keys of one multi-host run, made in memory on the controller.

    Every worker gets its own keypair, bound to its participant name: the server accepts
    no other key, and a key speaks only for its own participant (a worker holding h1's key
    cannot join, or speak, as h2). How a runner uses them:

        keys = make_run_keys(["h1", "h2"])
        with SyncServer(expected=["h1", "h2"], run_keys=keys) as server:
            for spec in specs:                   # spec.env: the worker's process environment
                name = spec.env["MHTEST_WORKER"]
                spec.env.update(keys.client_env(name))  # + MHTEST_SYNC_ADDRESS, _PARTICIPANT
            ...  # in the worker, SyncClient.from_environment() connects with its keypair

    The secrets travel only in the worker's environment: never on a command line (every
    user can read those), in a file other users can read, or a log. repr() hides them.
    """

    server_public: bytes
    server_secret: bytes = field(repr=False)
    clients: Mapping[str, tuple[bytes, bytes]] = field(repr=False)  # name -> (public, secret)

    @property
    def participants(self) -> list[str]:
        return list(self.clients)

    def server_keys(self) -> ServerKeys:
        """The server's side: its keypair, and each client key bound to its participant."""
        from zmq.utils import z85

        accepted = {z85.decode(public): name for name, (public, _) in self.clients.items()}
        return ServerKeys(self.server_public, self.server_secret, accepted)

    def client_keys(self, participant: str) -> ClientKeys:
        """The keys `participant` connects with; SyncError for a name without keys."""
        if participant not in self.clients:
            raise SyncError(
                f"sync keys: no key for participant {participant!r} in this run's keys "
                f"(made for {', '.join(self.clients) or 'nobody'})"
            )
        public, secret = self.clients[participant]
        return ClientKeys(public, secret, self.server_public)

    def client_env(self, participant: str) -> dict[str, str]:
        """The environment variables that give `participant`'s process its keys."""
        mine = self.client_keys(participant)
        return {
            ENV_SERVER_KEY: mine.server_public.decode(),
            ENV_CLIENT_KEY: mine.public.decode(),
            ENV_CLIENT_SECRET: mine.secret.decode(),
        }


def make_run_keys(participants: Iterable[str]) -> RunKeys:
    """A server keypair and one client keypair per participant name, in memory only.

    The name "" makes a key bound to no name: its holder may join under any name (the
    participants of a control file's barriers take the names the control files give).
    """
    import zmq

    names = list(participants)
    if len(set(names)) != len(names):
        raise SyncError(f"sync keys: participant names repeat: {names}")
    server_public, server_secret = zmq.curve_keypair()
    clients = {name: zmq.curve_keypair() for name in names}
    return RunKeys(server_public, server_secret, clients)


def client_keys_from_env(env: Mapping[str, str]) -> ClientKeys | None:
    """The keys of MHTEST_SYNC_SERVER_KEY, _CLIENT_KEY, _CLIENT_SECRET; None if none is set."""
    values = {name: env.get(name, "").strip() for name in ENV_RUN_KEYS}
    if not any(values.values()):
        return None
    for name, value in values.items():
        if not value:
            together = ", ".join(ENV_RUN_KEYS)
            raise SyncError(f"sync keys: {name} is not set (it goes with {together})")
        if len(value) != 40:
            raise SyncError(f"sync keys: {name} is not a CurveZMQ key (40 characters of z85)")
    return ClientKeys(
        values[ENV_CLIENT_KEY].encode(),
        values[ENV_CLIENT_SECRET].encode(),
        values[ENV_SERVER_KEY].encode(),
    )


def create_keys(keys_dir: str | os.PathLike, clients: Iterable[str] = ("client",)) -> Path:
    """Create a keys directory with a server keypair and the named client keypairs."""
    import zmq.auth

    root = Path(keys_dir)
    (root / "clients").mkdir(parents=True, exist_ok=True)
    if not (root / "server.key_secret").exists():
        zmq.auth.create_certificates(str(root), "server")
    for name in clients:
        if not (root / "clients" / f"{name}.key_secret").exists():
            zmq.auth.create_certificates(str(root / "clients"), name)
    for secret in root.rglob("*.key_secret"):
        secret.chmod(0o600)
    return root


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not path.is_file():
        raise SyncError(
            f"sync keys: {path} is missing (create it with mhtest.sync.keys.create_keys)"
        )
    try:
        public, secret_key = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise SyncError(f"sync keys: cannot read {path}: {exc}") from None
    if secret and not secret_key:
        raise SyncError(f"sync keys: {path} holds no secret key")
    return public, secret_key


def load_server_keys(keys_dir: str | os.PathLike) -> ServerKeys:
    """The server side of a keys directory (every listed client key accepted under any
    participant name); raises SyncError naming a missing file."""
    from zmq.utils import z85

    root = Path(keys_dir)
    public, secret = _load(root / "server.key_secret", secret=True)
    clients = root / "clients"
    listed = sorted(clients.glob("*.key")) if clients.is_dir() else []
    if not listed:
        raise SyncError(f"sync keys: no client public keys in {clients} (NAME.key files)")
    accepted = {z85.decode(_load(path, secret=False)[0]): "" for path in listed}
    return ServerKeys(public, secret or b"", accepted)


def load_client_keys(keys_dir: str | os.PathLike, participant: str) -> ClientKeys:
    """The client side of a keys directory for `participant`."""
    root = Path(keys_dir)
    server_public, _ = _load(root / "server.key", secret=False)
    mine = root / "clients" / f"{participant}.key_secret"
    if not mine.is_file():
        mine = root / "clients" / "client.key_secret"
    public, secret = _load(mine, secret=True)
    return ClientKeys(public, secret or b"", server_public)


def check_client_dir(keys_dir: str | os.PathLike) -> None:
    """Raise SyncError unless `keys_dir` has the server's public key and a client secret."""
    root = Path(keys_dir)
    _load(root / "server.key", secret=False)
    if not any((root / "clients").glob("*.key_secret")):
        raise SyncError(f"sync keys: no client keypair (NAME.key_secret) in {root / 'clients'}")
