"""Real OpenSSH sshd hosts on loopback addresses, for tests and benchmarks.

`SshdPool` starts `sshd -D -e` processes, each bound to its own loopback address
(127.0.0.2, 127.0.0.3, ...) on a free port, with a generated ed25519 host key per host, one
generated client key, a known_hosts file and an ssh_config file, all inside one directory.
Every process is stopped by its PID on `close()`.

It works as root and as an ordinary user: sshd runs with `StrictModes no` and `UsePAM no`
and logs in as the account that started it (root, or the current user).

    with SshdPool(tmp_dir) as pool:
        info = pool.hosts(3)[0]          # HostInfo
        with info.make_host() as host:   # an SSHHost
            print(host.run("hostname").stdout)

tests/conftest.py and bench/transfer.py use this module; it needs `sshd` and `ssh-keygen`
(Debian: openssh-server, openssh-client).
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")
STARTUP_TIMEOUT = 10.0
FIRST_ADDRESS = 2  # 127.0.0.2


class SshdError(RuntimeError):
    """sshd could not be started for a test host."""


def find_sshd() -> str | None:
    """Path of the sshd binary, or None when OpenSSH's server is not installed."""
    for path in SSHD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("sshd")
    return found


def free_port(address: str) -> int:
    """A TCP port on `address` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


@dataclass
class HostInfo:
    """One running test host: where it listens and the files needed to log in."""

    address: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    ssh_config: str
    alias: str = ""
    host_key_file: str = ""
    pid: int = 0

    @property
    def pty_ok(self) -> bool:
        """Whether this sshd can give sessions a terminal (it must run as root for that)."""
        return os.geteuid() == 0

    @property
    def spec(self) -> str:
        """The host string a user would type: ``user@address:port``."""
        return f"{self.user}@{self.address}:{self.port}"

    def make_host(self, **opts: Any):
        """An SSHHost for this host (keys and known_hosts filled in); `opts` override."""
        from mhtest.hosts.ssh import SSHHost

        kwargs: dict[str, Any] = {
            "port": self.port,
            "user": self.user,
            "key_file": self.key_file,
            "known_hosts": self.known_hosts,
        }
        kwargs.update(opts)
        return SSHHost(self.address, **kwargs)

    def ssh_args(self) -> list[str]:
        """Arguments for the OpenSSH `ssh`/`scp` clients to reach this host non-interactively."""
        return ["-F", self.ssh_config, "-o", "BatchMode=yes"]


@dataclass
class _Running:
    info: HostInfo
    proc: subprocess.Popen
    log_path: Path


@dataclass
class SshdPool:
    """Starts and stops sshd test hosts inside `base_dir`; reuses hosts already started."""

    base_dir: Path
    user: str = field(default_factory=getpass.getuser)
    _running: list[_Running] = field(default_factory=list, init=False)
    _next: int = field(default=FIRST_ADDRESS, init=False)

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.sshd = find_sshd()
        self.key_file = str(self.base_dir / "client_key")
        self.known_hosts = str(self.base_dir / "known_hosts")
        self.ssh_config = str(self.base_dir / "ssh_config")
        self.authorized_keys = str(self.base_dir / "authorized_keys")

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> SshdPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def hosts(self, count: int) -> list[HostInfo]:
        """`count` running hosts, starting only those not yet running (in parallel)."""
        missing = count - len(self._running)
        if missing > 0:
            self._start(missing)
        return [r.info for r in self._running[:count]]

    def close(self) -> None:
        """Stop every sshd this pool started, by PID."""
        for running in self._running:
            stop_process(running.proc)
        self._running.clear()

    def stop_host(self, info: HostInfo) -> None:
        """Stop one host's sshd (by PID): the host is "down" until start_host()."""
        stop_process(self._find(info).proc)

    def start_host(self, info: HostInfo) -> None:
        """Start a stopped host again on the same address, port and host key."""
        running = self._find(info)
        if running.proc.poll() is None:
            return
        number = int(info.address.rsplit(".", 1)[1])
        fresh = self._spawn(number, info.host_key_file, port=info.port)
        self._wait_listening(fresh, time.monotonic() + STARTUP_TIMEOUT)
        running.proc, running.log_path = fresh.proc, fresh.log_path
        info.pid = fresh.proc.pid

    def _find(self, info: HostInfo) -> _Running:
        for running in self._running:
            if running.info.address == info.address and running.info.port == info.port:
                return running
        raise SshdError(f"{info.spec} is not a host of this pool")

    def log_text(self, info: HostInfo) -> str:
        """sshd's own log (stderr) for `info`, for debugging a failed login."""
        return self._find(info).log_path.read_text(errors="replace")

    # -- starting ----------------------------------------------------------------------------

    def _start(self, count: int) -> None:
        if self.sshd is None:
            raise SshdError("sshd not found; install openssh-server (Debian) to get test hosts")
        self._ensure_client_key()
        if os.geteuid() == 0:
            # sshd as root needs its privilege separation directory (normally made by systemd).
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        numbers = list(range(self._next, self._next + count))
        self._next += count
        if self._next > 250:
            raise SshdError("too many test hosts requested (loopback addresses exhausted)")
        with ThreadPoolExecutor(max_workers=min(8, count)) as pool:
            keys = list(pool.map(self._host_key, numbers))
        started = [self._spawn(n, key) for n, key in zip(numbers, keys)]
        deadline = time.monotonic() + STARTUP_TIMEOUT
        try:
            for running in started:
                self._wait_listening(running, deadline)
        except BaseException:
            for running in started:
                stop_process(running.proc)
            raise
        self._running.extend(started)
        self._write_client_files()

    def _ensure_client_key(self) -> None:
        if not os.path.exists(self.key_file):
            keygen(self.key_file, "mhtest-test-client")
            shutil.copyfile(self.key_file + ".pub", self.authorized_keys)
            os.chmod(self.authorized_keys, 0o600)

    def _host_key(self, number: int) -> str:
        host_dir = self.base_dir / f"host-{number}"
        host_dir.mkdir(exist_ok=True)
        key = str(host_dir / "ssh_host_ed25519_key")
        if not os.path.exists(key):
            keygen(key, f"mhtest-test-host-{number}")
        return key

    def _spawn(self, number: int, host_key: str, port: int | None = None) -> _Running:
        address = f"127.0.0.{number}"
        port = port or free_port(address)
        host_dir = self.base_dir / f"host-{number}"
        config = host_dir / "sshd_config"
        config.write_text(
            _SSHD_CONFIG.format(
                address=address,
                port=port,
                host_key=host_key,
                authorized_keys=self.authorized_keys,
                user=self.user,
            )
        )
        log_path = host_dir / "sshd.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [self.sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        info = HostInfo(
            address=address,
            port=port,
            user=self.user,
            key_file=self.key_file,
            known_hosts=self.known_hosts,
            ssh_config=self.ssh_config,
            alias=f"mhtest-host-{number - FIRST_ADDRESS + 1}",
            host_key_file=host_key,
            pid=proc.pid,
        )
        return _Running(info, proc, log_path)

    def _wait_listening(self, running: _Running, deadline: float) -> None:
        info = running.info
        wait_listening(running.proc, info.address, info.port, running.log_path, deadline)

    def _write_client_files(self) -> None:
        lines = []
        blocks = []
        for running in self._running:
            info = running.info
            pub = Path(info.host_key_file + ".pub").read_text().split()
            lines.append(f"[{info.address}]:{info.port} {pub[0]} {pub[1]}")
            for pattern, hostname in ((info.alias, info.address), (info.address, info.address)):
                blocks.append(
                    f"Host {pattern}\n"
                    f"    HostName {hostname}\n"
                    f"    Port {info.port}\n"
                    f"    User {info.user}\n"
                    f"    IdentityFile {self.key_file}\n"
                    f"    IdentitiesOnly yes\n"
                    f"    UserKnownHostsFile {self.known_hosts}\n"
                    f"    StrictHostKeyChecking yes\n"
                    f"    GlobalKnownHostsFile /dev/null\n"
                )
        Path(self.known_hosts).write_text("\n".join(lines) + "\n")
        Path(self.ssh_config).write_text("\n".join(blocks))


def wait_listening(
    proc: subprocess.Popen, address: str, port: int, log_path: Path, deadline: float
) -> None:
    """Return once the sshd `proc` answers on `address`:`port`; SshdError if it exits first
    (with the end of its log) or does not answer by `deadline` (monotonic)."""
    while True:
        if proc.poll() is not None:
            raise SshdError(
                f"sshd for {address}:{port} exited with {proc.returncode}: "
                + log_path.read_text(errors="replace").strip()[-500:]
            )
        try:
            with socket.create_connection((address, port), timeout=1) as sock:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SshdError(f"sshd for {address}:{port} did not answer in time")
        time.sleep(0.02)


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Terminate one process we started (by its PID), killing it if it does not exit."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def keygen(path: str, comment: str = "mhtest-test") -> None:
    """Generate an unencrypted ed25519 key pair at `path` (and `path`.pub)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        timeout=30,
    )


_SSHD_CONFIG = """\
ListenAddress {address}:{port}
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized_keys}
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 200:30:400
MaxSessions 200
Subsystem sftp internal-sftp
LogLevel ERROR
"""
