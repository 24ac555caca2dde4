"""CurveZMQ keys for the sync server and its clients: where they live, how to make them.

A keys directory (`--sync-keys DIR`, MHTEST_SYNC_KEYS) is laid out as:

    DIR/server.key                  the server's public key (every client needs it)
    DIR/server.key_secret           the server's secret key (the server's host only)
    DIR/clients/NAME.key            public keys the server accepts (every *.key there)
    DIR/clients/NAME.key_secret     a client's keypair; a client uses clients/<participant>
                                    if present, else clients/client

`create_keys(DIR)` writes a server keypair and one client keypair named "client".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from mhtest.sync.errors import SyncError


@dataclass
class ClientKeys:
    """What a client needs to speak CurveZMQ to the server."""

    public: bytes
    secret: bytes
    server_public: bytes


@dataclass
class ServerKeys:
    """What the server needs: its keypair and the directory of accepted client keys."""

    public: bytes
    secret: bytes
    clients_dir: Path


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
    """The server side of a keys directory; raises SyncError naming a missing file."""
    root = Path(keys_dir)
    public, secret = _load(root / "server.key_secret", secret=True)
    clients = root / "clients"
    if not clients.is_dir() or not any(clients.glob("*.key")):
        raise SyncError(f"sync keys: no client public keys in {clients} (NAME.key files)")
    return ServerKeys(public, secret or b"", clients)


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
