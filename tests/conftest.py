"""Shared fixtures: real OpenSSH sshd hosts on loopback addresses.

Every test that needs "a machine" gets a real sshd process (mhtest.hosts.testing.SshdPool):
each bound to its own loopback address (127.0.0.2, 127.0.0.3, ...) on a free port, with its
own generated ed25519 host key, a shared generated client key, a known_hosts file and an
ssh_config file, all in one session temporary directory. They are started on first request
(several in parallel), reused by every later test of the session, and stopped by PID at the
end. Works as root and as an ordinary user (sshd then runs with StrictModes no / UsePAM no and
logs in as that user).

Fixtures
--------
``sshd_hosts`` (session)
    A factory: ``sshd_hosts(n) -> list[HostInfo]``, the first `n` hosts (starting the missing
    ones). Hosts are shared by the whole session: do not break them; use ``broken_host`` for
    fault tests.
``sshd_host`` (session)
    ``sshd_hosts(1)[0]``.
``warm_hosts`` (session)
    A factory like ``sshd_hosts`` whose hosts have mhtest's environment cached (installed once
    per session, in fixture setup, outside the tests' timeouts).
``ssh_host`` (function)
    A connected ``SSHHost`` for ``sshd_host``, closed after the test.
``broken_host`` (function)
    A factory ``broken_host(kind) -> HostInfo`` describing a host that fails in a controlled
    way: ``"refused"`` (nothing listens on the port), ``"bad-key"`` (a client key the host does
    not accept), ``"changed-host-key"`` (known_hosts holds a different key for the host),
    ``"unknown-host-key"`` (an empty known_hosts file).

``mailbox`` (function)
    A real SMTP server on a loopback port (aiosmtpd), stopped after the test: ``.port``,
    ``.messages`` (email.message.Message) and ``.envelopes`` (sender, recipients) received.
    Skips when aiosmtpd is not installed (it is in the `test` extra).

``HostInfo`` (mhtest.hosts.testing) has ``address``, ``port``, ``user``, ``key_file``,
``known_hosts``, ``ssh_config``, ``alias`` (``mhtest-host-1``... in ssh_config), ``pid``,
``pty_ok`` (False when not root: such an sshd cannot hand out terminals), ``spec``
(``"root@127.0.0.2:40123"``), ``make_host(**opts) -> SSHHost`` and ``ssh_args()`` (``-F
ssh_config -o BatchMode=yes`` for the OpenSSH ``ssh``/``scp`` clients).

``debian_image`` (session)
    The Debian guest image of mhtest.virt.debian (sshd, dpkg, GRUB, Debian's -amd64 kernel,
    the -cloud-amd64 kernel package next to it), built on first use (about two minutes,
    from Debian's mirror; needs root, mmdebstrap and QEMU, else the tests skip) and cached
    in ~/.cache/mhtest between runs.
``kvm_host`` (session)
    A ``mhtest.autoserv.kvm.KVM`` installed on ``sshd_host``: KVMGuest hosts started on it
    run QEMU through that sshd host and are reached through it.

A test that must take a host down (stop sshd, restart it) uses a private pool instead of the
shared one, as tests/hosts/test_updown.py does::

    with SshdPool(tmp_path / "sshd") as pool:
        info = pool.hosts(1)[0]
        pool.stop_host(info)     # connections now refused
        pool.start_host(info)    # same address, port and host key

Many hosts start in well under a second (32 took 0.5 s here); each costs one sshd process.
If sshd is not installed the sshd fixtures skip with the reason (CI installs openssh-server).
"""

from __future__ import annotations

import dataclasses
import email
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mhtest.hosts.testing import HostInfo, SshdPool, find_sshd, free_port, keygen

# Started in the background by a non-interactive shell (as a CI script may be), this process
# would ignore SIGINT and hand that on to every mhtest it starts, and the tests of Ctrl-C
# could not press it: with a handler here, the processes it starts get the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def _sshd_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdPool]:
    with SshdPool(tmp_path_factory.mktemp("sshd")) as pool:
        yield pool


@pytest.fixture(scope="session")
def sshd_hosts(_sshd_pool: SshdPool) -> Callable[[int], list[HostInfo]]:
    """Factory: sshd_hosts(n) -> n running real sshd hosts (reused across the session)."""
    if find_sshd() is None:
        pytest.skip("sshd not found: install openssh-server to run tests against real hosts")

    def get(count: int = 1) -> list[HostInfo]:
        return _sshd_pool.hosts(count)

    return get


@pytest.fixture(scope="session")
def sshd_host(sshd_hosts: Callable[[int], list[HostInfo]]) -> HostInfo:
    """One running real sshd host."""
    return sshd_hosts(1)[0]


@pytest.fixture(scope="session")
def warm_hosts(sshd_hosts: Callable[[int], list[HostInfo]]) -> Callable[[int], list[HostInfo]]:
    """Factory: warm_hosts(n) -> n sshd hosts whose cached mhtest environment is ready.

    Every test host is this machine and user, so one install serves them all; it happens
    here, in fixture setup, outside the tests' timeouts (a fresh CI machine builds it once).
    """
    from mhtest.hosts.bootstrap import ensure_mhtest

    with sshd_hosts(1)[0].make_host() as host:
        ensure_mhtest(host, timeout=600)
    return sshd_hosts


@pytest.fixture(scope="session")
def debian_image():
    """The Debian guest image (mhtest.virt.debian.DebianGuest), built once and cached."""
    import os
    import shutil

    from mhtest.virt.debian import debian_guest

    missing = [t for t in ("qemu-system-x86_64", "mmdebstrap") if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        why = f"{', '.join(missing)} not installed" if missing else "not root"
        pytest.skip(f"the Debian guest image cannot be built: {why} (scripts/setup --test)")
    return debian_guest()


@pytest.fixture(scope="session")
def kvm_host(sshd_host: HostInfo):
    """QEMU/KVM installed on a real sshd host (mhtest.autoserv.kvm.KVM)."""
    import shutil

    from mhtest.autoserv.kvm import KVM

    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
    with sshd_host.make_host() as host:
        kvm = KVM(host)
        kvm.install()
        yield kvm
        kvm.close()


@pytest.fixture
def ssh_host(sshd_host: HostInfo):
    """A connected SSHHost for `sshd_host`, closed after the test."""
    with sshd_host.make_host() as host:
        yield host


@pytest.fixture
def broken_host(sshd_host: HostInfo, tmp_path: Path) -> Callable[[str], HostInfo]:
    """Factory: broken_host(kind) -> a HostInfo that fails in the way `kind` names."""

    def make(kind: str) -> HostInfo:
        if kind == "refused":
            return dataclasses.replace(sshd_host, port=free_port(sshd_host.address))
        if kind == "bad-key":
            key = tmp_path / "stranger_key"
            if not key.exists():
                keygen(str(key))
            return dataclasses.replace(sshd_host, key_file=str(key))
        if kind == "changed-host-key":
            other = tmp_path / "other_host_key"
            if not other.exists():
                keygen(str(other))
            kind_, b64 = Path(str(other) + ".pub").read_text().split()[:2]
            known = tmp_path / "known_hosts_changed"
            known.write_text(f"[{sshd_host.address}]:{sshd_host.port} {kind_} {b64}\n")
            return dataclasses.replace(sshd_host, known_hosts=str(known))
        if kind == "unknown-host-key":
            known = tmp_path / "known_hosts_empty"
            known.write_text("")
            return dataclasses.replace(sshd_host, known_hosts=str(known))
        raise ValueError(f"unknown broken_host kind {kind!r}")

    return make


class Mailbox:
    """A real SMTP server on loopback (aiosmtpd), keeping what it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[email.message.Message] = []
        self.envelopes: list = []
        self.port = free_port("127.0.0.1")
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """A real SMTP server on a loopback port, stopped after the test."""
    pytest.importorskip("aiosmtpd")
    box = Mailbox()
    box.controller.start()
    try:
        yield box
    finally:
        box.controller.stop()
