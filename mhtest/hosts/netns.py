"""A test host behind a network link of its own, which a test can cut: sshd in a namespace.

`NetnsHost` (root only) makes a network namespace joined to this machine by a veth pair
(10.213.X.1 here, 10.213.X.2 there), starts OpenSSH's sshd inside it and writes the
known_hosts and ssh_config entries to reach it (alias `mhtest-netns-X`). `cut()` takes the
host's end of the link down: packets are dropped silently, as when a cable is pulled or a
switch dies (taking this machine's end down instead would send them to the default route);
`restore()` brings it back. Everything is removed on close: sshd by its PID, the namespace
(and with it the link). The host shares this machine's filesystem, so mhtest's cached
environment there is this machine's.

    with NetnsHost(tmp_dir) as net:       # net.info: a HostInfo (mhtest.hosts.testing)
        net.cut(); ...; net.restore()

tests/functional/test_reconnect.py and bench/survive.py use it; it needs `ip` (iproute2).
"""

from __future__ import annotations

import getpass
import os
import random
import subprocess
import time
from pathlib import Path

from mhtest.hosts.testing import (
    _SSHD_CONFIG,
    HostInfo,
    SshdError,
    find_sshd,
    keygen,
    stop_process,
    wait_listening,
)

STARTUP_TIMEOUT = 10.0
PORT = 22


def available() -> str | None:
    """Why NetnsHost cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if find_sshd() is None:
        return "sshd not found: install openssh-server"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip netns does not work here: {exc}"
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise SshdError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class NetnsHost:
    """One sshd host in its own network namespace (see module docstring)."""

    def __init__(self, base_dir: str | os.PathLike) -> None:
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.net = random.randrange(1, 250)
        tag = f"{os.getpid() % 100000:05d}{self.net:03d}"
        self.namespace = f"mhtest-{tag}"
        self.here, self.there = f"mh{tag}a", f"mh{tag}b"
        self.address = f"10.213.{self.net}.2"
        self.proc: subprocess.Popen | None = None
        self.info: HostInfo | None = None
        self._made = False

    def __enter__(self) -> NetnsHost:
        try:
            self.start()
            return self
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> HostInfo:
        """Make the namespace and its link, start sshd there; the host's HostInfo."""
        _ip("netns", "add", self.namespace)
        self._made = True
        _ip("link", "add", self.here, "type", "veth", "peer", "name", self.there)
        _ip("link", "set", self.there, "netns", self.namespace)
        _ip("addr", "add", f"10.213.{self.net}.1/30", "dev", self.here)
        _ip("link", "set", self.here, "up")
        _ip("-n", self.namespace, "addr", "add", f"{self.address}/30", "dev", self.there)
        _ip("-n", self.namespace, "link", "set", self.there, "up")
        _ip("-n", self.namespace, "link", "set", "lo", "up")
        self.info = self._files()
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        config = self.base_dir / "sshd_config"
        config.write_text(
            _SSHD_CONFIG.format(
                address=self.address,
                port=PORT,
                host_key=self.info.host_key_file,
                authorized_keys=self.base_dir / "authorized_keys",
                user=self.info.user,
            )
        )
        with open(self.base_dir / "sshd.log", "wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, find_sshd() or "sshd", "-D", "-e"]
                + ["-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.info.pid = self.proc.pid  # `ip netns exec` execs sshd: the same process
        deadline = time.monotonic() + STARTUP_TIMEOUT
        wait_listening(self.proc, self.address, PORT, self.base_dir / "sshd.log", deadline)
        return self.info

    def cut(self) -> None:
        """Take the link down (at the namespace's end): nothing gets through any more."""
        _ip("-n", self.namespace, "link", "set", self.there, "down")

    def restore(self) -> None:
        _ip("-n", self.namespace, "link", "set", self.there, "up")

    def close(self) -> None:
        """Stop sshd (by PID) and remove the namespace with its link."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        if self._made:
            subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, timeout=30)
            self._made = False

    def _files(self) -> HostInfo:
        base, user = self.base_dir, getpass.getuser()
        key, host_key = str(base / "client_key"), str(base / "ssh_host_ed25519_key")
        for path, comment in ((key, "mhtest-test-client"), (host_key, "mhtest-netns-host")):
            if not os.path.exists(path):
                keygen(path, comment)
        (base / "authorized_keys").write_text(Path(key + ".pub").read_text())
        os.chmod(base / "authorized_keys", 0o600)
        kind, b64 = Path(host_key + ".pub").read_text().split()[:2]
        (base / "known_hosts").write_text(f"{self.address} {kind} {b64}\n")
        alias = f"mhtest-netns-{self.net}"
        (base / "ssh_config").write_text(
            f"Host {alias}\n    HostName {self.address}\n    Port {PORT}\n    User {user}\n"
            f"    IdentityFile {key}\n    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {base / 'known_hosts'}\n    StrictHostKeyChecking yes\n"
            "    GlobalKnownHostsFile /dev/null\n"
        )
        info = HostInfo(
            address=self.address,
            port=PORT,
            user=user,
            key_file=key,
            known_hosts=str(base / "known_hosts"),
            ssh_config=str(base / "ssh_config"),
            alias=alias,
            host_key_file=host_key,
        )
        return info
