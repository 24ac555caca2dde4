"""SSHHost: a host reached over SSH with paramiko.

One paramiko transport per host, opened on first use and reused by every command; each
command gets its own channel, so one SSHHost can be shared by several threads. Host keys are
checked against known_hosts (OpenSSH's file format); accepting an unknown key is an explicit
option and a changed key is always refused.
"""

from __future__ import annotations

import getpass
import logging
import os
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from mhtest.hosts import _paramiko
from mhtest.hosts.base import Host
from mhtest.hosts.errors import (
    AuthenticationError,
    HostError,
    HostKeyError,
    HostUnreachable,
)
from mhtest.hosts.process import RemoteProcess
from mhtest.hosts.result import CmdResult
from mhtest.hosts.ssh_reach import SSHWaiting, StreamSocket, _Socket, open_tcp, open_through

log = logging.getLogger(__name__)

# Fastest ciphers first: AES-GCM/CTR use AES-NI through OpenSSL; chacha20 is slow in paramiko.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes128-ctr", "aes256-gcm@openssh.com", "aes256-ctr")
WINDOW_SIZE = 16 * 1024 * 1024
MAX_PACKET_SIZE = 32768
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
DEFAULT_CONNECT_TIMEOUT = 15.0
#: Seconds without a packet from the host before it is asked whether it is still there.
KEEPALIVE = 5.0
#: Seconds the command starting a reboot may take to give the boot id.
REBOOT_ANSWER = 30.0
#: Seconds it then gets to answer before its connection counts as lost (and is closed).
KEEPALIVE_WAIT = 10.0


def _transport_class():
    """A paramiko Transport that also records the remote `exit-signal` of a channel."""
    paramiko = _paramiko.load()
    from paramiko.common import MSG_CHANNEL_REQUEST

    class _Transport(paramiko.Transport):
        _channel_handler_table = dict(paramiko.Transport._channel_handler_table)

        def _on_request(chan, m):  # noqa: N805 - called as a plain function (chan, message)
            start = m.packet.tell()
            if m.get_text() == "exit-signal":
                m.get_boolean()
                chan.exit_signal = m.get_text()
                chan.status_event.set()
                return
            m.packet.seek(start)
            paramiko.Channel._handle_request(chan, m)

        _channel_handler_table[MSG_CHANNEL_REQUEST] = _on_request

    return _Transport


def _ping(transport: Any, timeout: float) -> None:
    """Open and close a channel: the host's answer is the sign of life."""
    try:
        transport.open_session(timeout=timeout).close()
    except Exception as exc:  # noqa: BLE001 - the watch decides from what arrived
        log.debug("keepalive: no channel: %s", exc)


class SSHHost(SSHWaiting, Host):
    """A machine controlled over SSH (public key authentication).

    `hostname` is resolved as `mhtest run --hosts` resolves a name: an alias in the
    ssh_config file (`ssh_config`, default ~/.ssh/config; False for none) gives its
    HostName, User, Port, IdentityFile, UserKnownHostsFile and ConnectTimeout, and the
    arguments given here win over it. `key_file` is a path or a list of paths (default:
    ~/.ssh/id_* and the ssh-agent); `known_hosts` defaults to ~/.ssh/known_hosts. With
    `accept_new_host_keys`, a host not yet in known_hosts is accepted and recorded there; a
    changed key is always refused.
    """

    def __init__(
        self,
        hostname: str,
        user: str | None = None,
        port: int | None = None,
        key_file: str | Sequence[str] | None = None,
        known_hosts: str | None = None,
        accept_new_host_keys: bool = False,
        connect_timeout: float | None = None,
        name: str | None = None,
        params: dict[str, Any] | None = None,
        keepalive: float = KEEPALIVE,
        keepalive_wait: float = KEEPALIVE_WAIT,
        ssh_config: str | bool | None = None,
        jump: Any = None,
        proxy_command: str | None = None,
    ) -> None:
        super().__init__(params)
        alias, given_port = hostname, port
        if ssh_config is not False:
            from mhtest.hosts.inventory import ssh_config_entry

            entry = ssh_config_entry(alias, ssh_config if isinstance(ssh_config, str) else None)
            hostname = entry.address
            user = user or entry.user
            port = port or (entry.port if entry.port != 22 else None)
            key_file = key_file or entry.key_file
            known_hosts = known_hosts or entry.known_hosts
            connect_timeout = connect_timeout or entry.connect_timeout
            jump = jump or entry.jump
            proxy_command = proxy_command or entry.proxy_command
        #: How the host is reached when not directly: through an SSH host (a HostConfig,
        #: or an SSHHost of the caller's), or through a command's stdin and stdout.
        self.jump = jump
        self.proxy_command = proxy_command
        self._jump_host: Any = jump if isinstance(jump, SSHHost) else None
        self.hostname = hostname
        self.user = user or getpass.getuser()
        self.port = int(port or 22)
        if isinstance(key_file, str):
            key_file = [key_file]
        self.key_files = [os.path.expanduser(k) for k in (key_file or [])]
        self.known_hosts = os.path.expanduser(known_hosts or "~/.ssh/known_hosts")
        self.accept_new_host_keys = accept_new_host_keys
        self.connect_timeout = connect_timeout or DEFAULT_CONNECT_TIMEOUT
        self.keepalive = keepalive
        self.keepalive_wait = keepalive_wait
        #: Why the connection was closed as lost ("connection to h2 lost at 12:00:01 …"),
        #: and since when (time.time()) the host had not answered.
        self.lost: str | None = None
        self.lost_at: float | None = None
        self.name = name or (alias if given_port in (None, 22) else f"{alias}:{given_port}")
        self._lock = threading.Lock()
        self._transport: Any = None
        self._ready: tuple[Any, float] | None = None  # (socket, when): see ssh_banner()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"SSHHost({self.user}@{self.hostname}:{self.port})"

    # -- connection --------------------------------------------------------------------------

    @property
    def known_hosts_name(self) -> str:
        """How this host is written in known_hosts."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def transport(self) -> Any:
        """The connected, authenticated paramiko transport (connecting if needed)."""
        if self._pid != os.getpid():
            # Forked (mhtest.parallel): the parent's transport thread does not exist here and
            # its socket is shared; leave both to the parent and connect anew.
            self._lock = threading.Lock()
            self._transport = None
            self._pid = os.getpid()
        with self._lock:
            if self._transport is None or not self._transport.is_active():
                self._transport = self._connect()
            return self._transport

    def _connect(self) -> Any:
        paramiko = _paramiko.load()

        where = f"{self.user}@{self.hostname}:{self.port}"
        sock = self._take_ready_socket() or self._open_socket()
        sock.last_recv = time.monotonic()
        transport = _transport_class()(
            sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE
        )
        try:
            options = transport.get_security_options()
            supported = options.ciphers
            options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in supported) + tuple(
                c for c in supported if c not in PREFERRED_CIPHERS
            )
            known = self._load_known_hosts().lookup(self.known_hosts_name)
            if known:
                # Ask for a key type we can verify, as OpenSSH does.
                wanted = tuple(k for k in options.key_types if k in known)
                if wanted:
                    options.key_types = wanted
            try:
                transport.banner_timeout = self.connect_timeout
                transport.handshake_timeout = self.connect_timeout
                # The transport's own timeouts come first (it logs why, to job.log, and
                # ends); ours only guards against one that never comes.
                transport.start_client(timeout=self.connect_timeout + 1.0)
                server_key = transport.get_remote_server_key()
            except (paramiko.SSHException, OSError, EOFError) as exc:
                reason = str(exc) or type(exc).__name__
                if not transport.is_active() or "No existing session" in reason:
                    reason = f"no SSH answer within {self.connect_timeout:g} s"
                raise HostUnreachable(
                    f"{self.name}: SSH handshake with {where} failed: {reason}", self.name
                ) from None
            self._check_host_key(server_key, known)
            self._authenticate(transport)
        except BaseException:
            transport.close()
            raise
        transport.set_keepalive(30)
        self.lost = self.lost_at = None
        if self.keepalive:
            name = f"ssh-keepalive-{self.name}"
            threading.Thread(
                target=self._watch, args=(transport, sock), name=name, daemon=True
            ).start()
        log.debug("%s: connected (%s)", self.name, transport.remote_cipher)
        return transport

    def _open_socket(self, timeout: float | None = None) -> Any:
        """A stream to the host's SSH port: a TCP socket here, a channel through the jump
        host, a ProxyCommand's pipes (a tunnel through its hypervisor for a VM guest).

        It must have `last_recv` (time.monotonic() of the last data received), which the
        keepalive watch reads, and peek(). HostUnreachable, naming the host, when it cannot
        be opened.
        """
        timeout = timeout or self.connect_timeout
        if self.proxy_command:
            return self._open_proxy_command(timeout)
        if self.jump is not None:
            return open_through(self.jump_host(), self.name, self.hostname, self.port, timeout)
        return open_tcp(self.name, self.hostname, self.port, timeout)

    def jump_host(self) -> SSHHost:
        """The SSH host this one is reached through (made once; keys and known_hosts are
        this host's when its own config names none)."""
        if self._jump_host is None:
            from mhtest.hosts.inventory import make_host

            config = self.jump
            opts: dict[str, Any] = {
                "connect_timeout": config.connect_timeout or self.connect_timeout
            }
            if not config.key_file and self.key_files:
                opts["key_file"] = self.key_files
            if not config.known_hosts:
                opts["known_hosts"] = self.known_hosts
            self._jump_host = make_host(config, **opts)
        return self._jump_host

    def _open_proxy_command(self, timeout: float) -> Any:
        paramiko = _paramiko.load()
        try:
            proxy = paramiko.ProxyCommand(self.proxy_command)
        except (paramiko.ProxyCommandFailure, OSError, ValueError) as exc:
            raise HostUnreachable(
                f"{self.name}: ProxyCommand {self.proxy_command!r} failed: {exc}", self.name
            ) from None
        stream = StreamSocket(proxy)
        stream.settimeout(timeout)
        return stream

    def _watch(self, transport: Any, sock: _Socket) -> None:
        """Ask an idle connection for an answer; close it when none comes in time.

        paramiko's own keepalives ask for no reply, so they cannot tell a dead host (a
        partition, a stopped sshd: the kernel may still acknowledge) from a quiet one.
        Opening a channel is a request the host must answer; any packet from it counts.
        Once closed, every command on it ends at once with `lost` as the reason.
        """
        ping: threading.Thread | None = None
        while transport.is_active():
            time.sleep(min(1.0, self.keepalive))
            silent = time.monotonic() - sock.last_recv
            if silent < self.keepalive:
                continue
            if silent >= self.keepalive + self.keepalive_wait:
                self.lost_at = time.time() - silent
                since = time.strftime("%H:%M:%S", time.localtime(self.lost_at))
                self.lost = (
                    f"connection to {self.name} lost at {since} (no answer for {silent:.0f} s)"
                )
                log.warning("%s", self.lost)
                transport.close()
                return
            if ping is None or not ping.is_alive():
                ping = threading.Thread(
                    target=_ping, args=(transport, self.keepalive_wait), daemon=True
                )
                ping.start()

    def _load_known_hosts(self) -> Any:
        paramiko = _paramiko.load()

        keys = paramiko.HostKeys()
        if os.path.exists(self.known_hosts):
            try:
                keys.load(self.known_hosts)
            except (OSError, paramiko.SSHException) as exc:
                raise HostKeyError(
                    f"{self.name}: cannot read known_hosts file {self.known_hosts}: {exc}",
                    self.name,
                    self.known_hosts,
                ) from None
        return keys

    def _check_host_key(self, key: Any, known: Any) -> None:
        fingerprint = key.fingerprint
        if known and key.get_name() in known:
            if known[key.get_name()] == key:
                return
            raise HostKeyError(
                f"{self.name}: host key CHANGED ({key.get_name()} {fingerprint}) and does not "
                f"match {self.known_hosts_name} in {self.known_hosts}; if the host was really "
                f"reinstalled, remove the old key: ssh-keygen -f {self.known_hosts} "
                f"-R '{self.known_hosts_name}'",
                self.name,
                self.known_hosts,
            )
        if not self.accept_new_host_keys:
            raise HostKeyError(
                f"{self.name}: unknown host key ({key.get_name()} {fingerprint}); "
                f"{self.known_hosts_name} is not in {self.known_hosts}; add it (ssh-keyscan -p "
                f"{self.port} {self.hostname} >> {self.known_hosts}) or accept new host keys "
                "(--ssh-accept-new-host-keys)",
                self.name,
                self.known_hosts,
            )
        directory = os.path.dirname(self.known_hosts)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        with open(self.known_hosts, "a", encoding="ascii") as out:
            out.write(f"{self.known_hosts_name} {key.get_name()} {key.get_base64()}\n")
        log.warning(
            "%s: accepted new host key %s %s into %s",
            self.name,
            key.get_name(),
            fingerprint,
            self.known_hosts,
        )

    def _candidate_keys(self) -> tuple[list[tuple[str, Any]], list[str]]:
        """(label, key) pairs to offer, and the problems met while loading them."""
        paramiko = _paramiko.load()

        files = self.key_files or [
            p
            for p in (os.path.expanduser(f"~/.ssh/{n}") for n in DEFAULT_KEYS)
            if os.path.exists(p)
        ]
        keys: list[tuple[str, Any]] = []
        problems: list[str] = []
        for path in files:
            try:
                keys.append((path, paramiko.PKey.from_path(path)))
            except paramiko.PasswordRequiredException:
                problems.append(f"{path} is passphrase-protected (load it into ssh-agent)")
            except (OSError, paramiko.SSHException, ValueError) as exc:
                problems.append(f"{path} could not be read: {exc}")
        if not self.key_files and os.environ.get("SSH_AUTH_SOCK"):
            try:
                for i, key in enumerate(paramiko.Agent().get_keys()):
                    keys.append((f"ssh-agent key {i + 1} ({key.get_name()})", key))
            except paramiko.SSHException as exc:
                problems.append(f"ssh-agent: {exc}")
        return keys, problems

    def _authenticate(self, transport: Any) -> None:
        paramiko = _paramiko.load()

        keys, problems = self._candidate_keys()
        for label, key in keys:
            try:
                transport.auth_publickey(self.user, key)
            except paramiko.AuthenticationException:
                log.debug("%s: key %s refused", self.name, label)
                continue
            except paramiko.SSHException as exc:
                problems.append(f"{label}: {exc}")
                continue
            if transport.is_authenticated():
                return
        tried = ", ".join(label for label, _ in keys) or "no key found"
        extra = f" ({'; '.join(problems)})" if problems else ""
        raise AuthenticationError(
            f"{self.name}: authentication as {self.user} failed; keys tried: {tried}{extra}; "
            f"add the public key to ~{self.user}/.ssh/authorized_keys on the host "
            f"(ssh-copy-id -i KEY.pub -p {self.port} {self.user}@{self.hostname}) or name the "
            "right key (IdentityFile in ~/.ssh/config, ansible_ssh_private_key_file)",
            self.name,
            tuple(label for label, _ in keys),
        )

    def close(self) -> None:
        """Remove temporary directories, then close the connection (and the jump host's,
        when made here)."""
        try:
            if self._transport is not None and self._transport.is_active():
                super().close()
        finally:
            self._forget_connection()
            if self._jump_host is not None and self._jump_host is not self.jump:
                self._jump_host.close()
                self._jump_host = None

    def drop_connection(self) -> None:
        """Close the connection now, without cleaning up on the host (for a stop).

        Whatever runs on it ends at once; the next command connects again.
        """
        self._forget_connection()

    def _forget_connection(self) -> None:
        if self._pid != os.getpid():
            self._transport = None
            self._ready = None
            return
        self._drop_ready_socket()
        with self._lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    # -- commands ----------------------------------------------------------------------------

    def open_channel(self, timeout: float | None = None) -> Any:
        """A new session channel on the shared transport."""
        paramiko = _paramiko.load()

        transport = self.transport()
        try:
            return transport.open_session(timeout=timeout or self.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._forget_connection()
            raise HostUnreachable(f"{self.name}: cannot open a channel: {exc}", self.name) from None

    def start(
        self,
        command: str,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> RemoteProcess:
        """Start `command` and return at once; read its output from the RemoteProcess."""
        return RemoteProcess.start(self, command, env=env, args=args)

    def run(
        self,
        command: str,
        timeout: float | None = None,
        ignore_status: bool = False,
        stdin: str | bytes | None = None,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> CmdResult:
        """Run `command` through the login shell; raise CmdError on failure unless ignored.

        `args` are shell-quoted and appended; on `timeout` the command's whole process group is
        killed and CmdTimeout raised.
        """
        proc = self.start(command, env=env, args=args)
        result = proc.communicate(stdin=stdin, timeout=timeout)
        log.debug("%s: %r -> %s (%.3f s)", self.name, command, result.exit_status, result.duration)
        return self.check_result(result, ignore_status)

    def _start_reboot(self, steps: str, what: str) -> tuple[str, Callable[[float], bool] | None]:
        """One command reads the boot id, starts `steps` detached and waits on its input:
        its session ends when the host's shutdown ends the processes, which tells that the
        host goes down without asking it (a login each time, while it shuts down). The boot
        id is on its way before the reboot starts: no need to wait a moment first."""
        from mhtest.hosts.base import BOOT_ID

        channel = self.open_channel()
        try:
            channel.settimeout(REBOOT_ANSWER)
            detached = f"( ({steps}) </dev/null >/dev/null 2>&1 & )"
            channel.exec_command(f"cat {BOOT_ID} && {detached} && exec cat >/dev/null")
            answer = b""
            while not answer.endswith(b"\n") and len(answer) < 200:
                data = channel.recv(200)
                if not data:
                    break
                answer += data
        except (OSError, EOFError) as exc:  # (socket.timeout too)
            channel.close()
            raise HostUnreachable(
                f"{self.name}: no answer to the reboot: {exc}", self.name
            ) from None
        old_boot_id = answer.decode("ascii", "replace").strip()
        if not answer.endswith(b"\n") or not old_boot_id:
            why = (
                channel.recv_stderr(500).decode("utf-8", "replace").strip()
                if channel.recv_stderr_ready()
                else ""
            )
            channel.close()
            raise HostError(
                f"{self.name}: cannot read its boot id ({BOOT_ID}){': ' + why if why else ''}",
                self.name,
            )
        log.info("%s: rebooting with %r (boot id %s)", self.name, what, old_boot_id)

        def going(timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            try:
                while time.monotonic() < deadline:
                    transport = channel.get_transport()
                    if (
                        channel.exit_status_ready()
                        or channel.closed
                        or transport is None
                        or not transport.is_active()
                    ):
                        log.debug("%s: its session ended: going down", self.name)
                        return True
                    channel.status_event.wait(min(0.05, max(0.0, deadline - time.monotonic())))
                return False
            finally:
                channel.close()

        return old_boot_id, going

    def is_up(self) -> bool:
        """True if the host accepts a connection and runs `true`."""
        try:
            return self.run("true", timeout=self.connect_timeout).ok
        except HostError as exc:
            log.debug("%s: not up: %s", self.name, exc)
            self._forget_connection()
            return False

    # -- files -------------------------------------------------------------------------------

    def send_file(
        self, source: str | Sequence[str], dest: str, timeout: float | None = None
    ) -> None:
        """Copy local file(s) or directories to `dest` on the host (see mhtest.hosts.transfer).

        `timeout` bounds each wait for progress (seconds without data moving), not the total.
        """
        from mhtest.hosts import transfer

        transfer.send(self, source, dest, timeout=timeout)

    def get_file(
        self, source: str | Sequence[str], dest: str, timeout: float | None = None
    ) -> None:
        """Copy file(s) or directories from the host to local `dest` (same rules as send_file)."""
        from mhtest.hosts import transfer

        transfer.get(self, source, dest, timeout=timeout)

    # -- interactive -------------------------------------------------------------------------

    def ssh_command(self, extra: Sequence[str] = ()) -> list[str]:
        """An OpenSSH `ssh` command line reaching this host with the same key and known_hosts."""
        cmd = [
            "ssh",
            "-p",
            str(self.port),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=" + ("accept-new" if self.accept_new_host_keys else "yes"),
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={int(self.connect_timeout)}",
        ]
        for key in self.key_files:
            cmd += ["-i", key]
        if self.key_files:
            cmd += ["-o", "IdentitiesOnly=yes"]
        if self.proxy_command:
            cmd += ["-o", f"ProxyCommand={self.proxy_command}"]
        elif self.jump is not None:
            proxy = shlex.join(self.jump_host().ssh_command(["-W", "%h:%p"]))
            cmd += ["-o", f"ProxyCommand={proxy}"]
        return [*cmd, *extra, f"{self.user}@{self.hostname}"]

    def shell(
        self, timeout: float = 30, prompt: str = r"^MHTEST-PROMPT\$ ?$", pty: bool = True
    ) -> Any:
        """An aexpect ShellSession: sendline, read_until_any_line_matches, cmd_output."""
        from mhtest.hosts.shell import open_shell

        return open_shell(self, timeout=timeout, prompt=prompt, pty=pty)
