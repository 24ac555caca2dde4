"""A virtual machine: one qemu-system-x86_64 process on this host, driven through QMP.

The VM keeps everything in its own directory: QEMU's stderr (``qemu.log``), the serial console
log (``console.log``) and, when the path is short enough, the QMP and console sockets. Cleanup
never leaves a QEMU behind: ``cleanup()`` (also run by the context manager and at interpreter
exit) kills QEMU by its PID; QEMU stays in the caller's process group so a runner that kills
the test's group kills it too, and it gets SIGKILL if the thread that spawned it dies (we spawn
it from the VM's long-lived monitor thread, see ``_spawn``).
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mhtest.virt.qmp import DEFAULT_TIMEOUT, QMPError, QMPMonitor

log = logging.getLogger(__name__)

MIGRATION_DONE = ("completed", "failed", "cancelled")


class VMError(Exception):
    """Something went wrong with a VM; the message names the VM and QEMU's own words."""


class VMStartError(VMError):
    """QEMU could not be started (bad arguments, missing files, port in use...)."""


class MigrationError(VMError):
    """QEMU reported a migration as failed or it did not finish in time."""


class MigrationTimeout(MigrationError):
    """A migration did not reach the awaited status in time (QEMU still has it going)."""


def _opt(value: object) -> str:
    """A value inside a QEMU option string (commas separate options: a literal one is doubled)."""
    return str(value).replace(",", ",,")


def kvm_usable() -> bool:
    """True when /dev/kvm exists and this user may open it read-write."""
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


@dataclass
class VMConfig:
    """How to start a VM. Source and destination of a migration must use the same config."""

    name: str
    memory_mb: int = 128
    smp: int = 1
    accel: str = "auto"  # "auto": KVM when /dev/kvm is usable, TCG otherwise; or "kvm"/"tcg"
    machine: str = "pc"
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    loaders: list[tuple[str, int]] = field(default_factory=list)  # (file, guest address)
    extra_args: list[str] = field(default_factory=list)
    qemu_binary: str = "qemu-system-x86_64"
    prompt: str = r"mhtest-guest# $"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> VMConfig:
        data = dict(data)
        data["loaders"] = [tuple(x) for x in data.get("loaders", [])]
        return cls(**data)

    def accel_args(self) -> list[str]:
        if self.accel == "auto":
            # Several -accel options are tried in order: a /dev/kvm we may open that still
            # cannot create a VM (nested virtualisation off) falls back to TCG.
            return ["-accel", "kvm", "-accel", "tcg"] if kvm_usable() else ["-accel", "tcg"]
        return ["-accel", self.accel]


class VM:
    """A running (or about to run) QEMU process and its QMP monitor."""

    def __init__(self, config: VMConfig, workdir: str | Path) -> None:
        self.config = config
        self.name = config.name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "qemu.log"
        self.console_log_path = self.workdir / "console.log"
        self._tmpdir: str | None = None
        self._fifo: str | None = None
        # QEMU's own values of the migration settings apply_migration_settings() changed
        self._migration_defaults: dict[str, dict[str, Any]] = {"caps": {}, "params": {}}
        self.proc: subprocess.Popen | None = None
        self.qmp: QMPMonitor | None = None
        self._console: Any = None
        self._cleaned = False

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def private_dir(self) -> str:
        """A short private temporary directory of this VM, removed by cleanup()."""
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix=f"mhvm-{self.name[:20]}-")
        return self._tmpdir

    def _socket_path(self, name: str) -> str:
        path = self.workdir / name
        if len(str(path.absolute())) < 100:  # sun_path holds 108 bytes
            return str(path.absolute())
        return os.path.join(self.private_dir(), name)

    def build_args(self, incoming: bool = False, paused: bool = False) -> list[str]:
        """The QEMU command line (without the monitor, which start() adds)."""
        c = self.config
        console = self._socket_path("console.sock")
        args = [c.qemu_binary, "-nodefaults", "-display", "none", "-name", c.name]
        args += ["-machine", c.machine, *c.accel_args()]
        args += ["-m", str(c.memory_mb), "-smp", str(c.smp)]
        args += [
            "-chardev",
            f"socket,id=console0,path={_opt(console)},server=on,wait=off,"
            f"logfile={_opt(self.console_log_path.absolute())},logappend=on",
            "-serial",
            "chardev:console0",
        ]
        if c.kernel:
            args += ["-kernel", c.kernel]
        if c.initrd:
            args += ["-initrd", c.initrd]
        if c.append:
            args += ["-append", c.append]
        for path, addr in c.loaders:
            args += ["-device", f"loader,file={_opt(path)},addr={addr:#x}"]
        if incoming:
            args += ["-incoming", "defer"]
        if paused:
            args.append("-S")
        return args + list(c.extra_args)

    def start(
        self, incoming: bool = False, timeout: float = DEFAULT_TIMEOUT, paused: bool = False
    ) -> VM:
        """Start QEMU and connect QMP; returns self.

        ``incoming``: ``-incoming defer`` (a migration destination); ``paused``: ``-S``, the
        CPUs wait for ``cont()`` (QEMU's status is ``prelaunch``).
        """
        if self.proc is not None:
            raise VMError(f"VM {self.name}: already started (pid {self.pid})")
        if shutil.which(self.config.qemu_binary) is None:
            raise VMStartError(
                f"VM {self.name}: cannot run {self.config.qemu_binary}: not found "
                "(install it: apt-get install qemu-system-x86)"
            )
        qmp_path = self._socket_path("qmp.sock")
        if os.path.exists(qmp_path):
            os.unlink(qmp_path)
        args = self.build_args(incoming, paused)
        args += ["-chardev", f"socket,id=qmp0,path={_opt(qmp_path)}"]
        args += ["-mon", "chardev=qmp0,mode=control"]
        self.qmp = QMPMonitor(self.name, qmp_path)
        atexit.register(self.cleanup)
        log.info("VM %s: starting %s", self.name, shlex.join(args))
        try:
            self.qmp.listen()
            with open(self.log_path, "ab") as stderr:
                self.proc = self.qmp.call_in_loop(lambda: self._spawn(args, stderr))
        except VMError:
            self.cleanup()
            raise
        except QMPError as exc:  # its message names the VM already
            self.cleanup()
            raise VMStartError(str(exc)) from None
        try:
            self.qmp.accept(timeout, self.is_alive)
        except QMPError as exc:
            msg = self._start_failure(str(exc))
            self.cleanup()
            raise VMStartError(msg) from None
        log.info("VM %s: running as pid %s (%s)", self.name, self.pid, self.accel())
        return self

    def _spawn(self, args: list[str], stderr: Any) -> subprocess.Popen:
        # setpriv --pdeathsig: QEMU gets SIGKILL when the spawning thread (our monitor thread,
        # alive as long as this VM) dies, e.g. when the worker is killed with SIGKILL.
        prefix = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        try:
            return subprocess.Popen(
                prefix + args,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                cwd=self.workdir,
            )
        except OSError as exc:
            raise VMStartError(f"VM {self.name}: cannot run {args[0]}: {exc}") from None

    def _start_failure(self, what: str) -> str:
        code = None
        if self.proc is not None:
            try:  # a QEMU that refused its arguments is exiting; let it finish its message
                code = self.proc.wait(2)
            except subprocess.TimeoutExpired:
                pass
        tail = self.log_tail()
        msg = f"VM {self.name}: QEMU failed to start"
        if code is not None:
            msg += f" (exit status {code})"
        return f"{msg}: {tail or what} [log: {self.log_path}]"

    def log_tail(self, lines: int = 5) -> str:
        """The last lines QEMU wrote on stderr, joined on one line."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(x.strip() for x in text.strip().splitlines()[-lines:] if x.strip())

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def quit(self, timeout: float = 10.0) -> None:
        """Ask QEMU to quit through QMP; kill it if it does not within ``timeout``."""
        if self.is_alive():
            try:
                self.qmp.cmd("quit", timeout=timeout)
            except QMPError as exc:  # QEMU may close the socket before answering
                log.debug("VM %s: quit: %s", self.name, exc)
        self.cleanup(grace=timeout)

    def cleanup(self, grace: float = 2.0) -> None:
        """Stop QEMU (SIGTERM, then SIGKILL after ``grace`` seconds) and free everything."""
        if self._cleaned:
            return
        self._cleaned = True
        if self._console is not None:
            try:
                self._console.close()
            except Exception as exc:
                log.debug("VM %s: closing console: %s", self.name, exc)
            self._console = None
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            self._signal(signal.SIGCONT)  # a stopped QEMU (SIGSTOP) acts on SIGTERM only then
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("VM %s: pid %s ignored SIGTERM, killing it", self.name, self.pid)
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
        if self.qmp is not None:
            self.qmp.close()
        self._release_fifo()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        atexit.unregister(self.cleanup)

    def _signal(self, sig: int) -> None:
        try:
            os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def __enter__(self) -> VM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- QMP ----------------------------------------------------------------------------------

    def cmd(self, command: str, args: dict | None = None, timeout: float = DEFAULT_TIMEOUT):
        """Run a QMP command; errors name this VM and quote QEMU."""
        if self.qmp is None:
            raise VMError(f"VM {self.name}: not started")
        if not self.is_alive():
            raise VMError(f"VM {self.name}: QEMU is not running ({self.log_tail() or 'no log'})")
        return self.qmp.cmd(command, args, timeout)

    def accel(self) -> str:
        return "kvm" if self.cmd("query-kvm").get("enabled") else "tcg"

    def status(self) -> str:
        """QEMU's run state: running, paused, inmigrate, postmigrate, ..."""
        return self.cmd("query-status")["status"]

    def is_running(self) -> bool:
        return bool(self.cmd("query-status")["running"])

    def stop(self) -> None:
        self.cmd("stop")

    def cont(self) -> None:
        self.cmd("cont")

    def event_mark(self) -> int:
        return self.qmp.event_mark()

    def wait_event(self, names: str | tuple[str, ...], timeout: float, match=None, since=0):
        """Wait for a QMP event (MIGRATION, STOP, RESUME, ...) from history position ``since``."""
        return self.qmp.wait_event(names, timeout, match, since)

    def pmemsave(self, addr: int, size: int, path: str | Path) -> Path:
        """Dump guest physical memory [addr, addr+size) to ``path``."""
        path = Path(path).absolute()
        self.cmd("pmemsave", {"val": addr, "size": size, "filename": str(path)}, timeout=120)
        return path

    # -- migration ----------------------------------------------------------------------------

    def set_migrate_capabilities(self, caps: dict[str, bool]) -> None:
        if caps:
            items = [{"capability": k, "state": bool(v)} for k, v in caps.items()]
            self.cmd("migrate-set-capabilities", {"capabilities": items})

    def set_migrate_parameters(self, params: dict[str, Any]) -> None:
        if params:
            self.cmd("migrate-set-parameters", dict(params))

    def apply_migration_settings(
        self, capabilities: dict[str, bool], parameters: dict[str, Any]
    ) -> None:
        """Set these migration capabilities and parameters for the next migration; those an
        earlier call set and these do not name go back to the values QEMU started with (a
        QEMU keeps them from one migration to the next)."""
        for kind, wanted in (("caps", capabilities), ("params", parameters)):
            originals = self._migration_defaults[kind]
            new = [k for k in wanted if k not in originals]
            if new:
                current = self._migration_settings(kind)
                originals.update({k: current.get(k) for k in new})
            settings = {k: v for k, v in originals.items() if v is not None}
            settings.update(wanted)
            if kind == "caps":
                self.set_migrate_capabilities(settings)
            else:
                self.set_migrate_parameters(settings)

    def _migration_settings(self, kind: str) -> dict[str, Any]:
        if kind == "caps":
            return {c["capability"]: c["state"] for c in self.cmd("query-migrate-capabilities")}
        return self.cmd("query-migrate-parameters")

    def migrate(self, uri: str) -> None:
        """Start an outgoing migration (returns at once; follow it with wait_migration)."""
        self.cmd("migrate", {"uri": uri})

    def migrate_incoming(self, uri: str) -> tuple[str, int]:
        """Listen for an incoming migration (``-incoming defer`` VMs); returns (host, port).

        A port of 0 lets the kernel pick a free one; the real one is read back from QEMU.
        """
        self.cmd("migrate-incoming", {"uri": uri})
        for addr in self.query_migrate().get("socket-address", []):
            if addr.get("type") in ("inet", "ipv4", "ipv6"):
                return addr["host"], int(addr["port"])
        raise MigrationError(f"VM {self.name}: QEMU did not report its listening port for {uri}")

    def migrate_incoming_fifo(self) -> str:
        """Take the incoming migration from a named pipe (``exec:cat FIFO``); returns its path.

        Whatever writes the stream into the pipe (``cat > FIFO``, locally or through ssh) is
        the source's ``exec:`` command. The pipe lives in private_dir(), never in the results.
        """
        fifo = os.path.join(self.private_dir(), "migration.fifo")
        os.mkfifo(fifo, 0o600)
        self._fifo = fifo
        self.cmd("migrate-incoming", {"uri": f"exec:cat {shlex.quote(fifo)}"})
        return fifo

    def _release_fifo(self) -> None:
        # The `cat` QEMU started may still wait for a writer: open the pipe for writing and
        # close it, so that it sees the end of the stream instead of outliving QEMU.
        if self._fifo is None:
            return
        try:
            os.close(os.open(self._fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # ENXIO: nobody reads it any more
            pass
        self._fifo = None

    def query_migrate(self) -> dict:
        return self.cmd("query-migrate")

    def migrate_cancel(self) -> None:
        self.cmd("migrate_cancel")

    def wait_migration_status(
        self, statuses: tuple[str, ...], timeout: float, poll: float = 0.2
    ) -> dict:
        """Follow query-migrate until its status is one of ``statuses``; returns its answer.

        Wakes up on MIGRATION events (the ``events`` capability), else polls. Works on both
        ends: on a destination, query-migrate reports the incoming migration. Raises
        MigrationTimeout after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        mark = self.event_mark()
        while True:
            info = self.query_migrate()
            if info.get("status") in statuses:
                return info
            left = deadline - time.monotonic()
            if left <= 0:
                raise MigrationTimeout(
                    f"VM {self.name}: migration not {'/'.join(statuses)} after {timeout:.0f}s "
                    f"(status {info.get('status')}, "
                    f"{info.get('ram', {}).get('transferred', 0)} bytes sent)"
                )
            try:
                self.wait_event("MIGRATION", min(poll, left), since=mark)
                mark = self.event_mark()
            except QMPError:
                pass

    def wait_migration(self, timeout: float, poll: float = 0.2) -> dict:
        """Follow a migration until completed/failed/cancelled; returns query-migrate's answer.

        Raises MigrationError with QEMU's error-desc when it failed, MigrationTimeout when
        it is still going after ``timeout`` seconds.
        """
        info = self.wait_migration_status(MIGRATION_DONE, timeout, poll)
        if info.get("status") == "completed" and not info.get("total-time"):
            # QEMU (7.2) announces "completed" a moment before it fills in its figures
            figures_by = time.monotonic() + 1.0
            while not info.get("total-time") and time.monotonic() < figures_by:
                time.sleep(0.01)
                info = self.query_migrate()
        if info.get("status") == "failed":
            raise MigrationError(
                f"VM {self.name}: migration failed: "
                f"{info.get('error-desc') or self.log_tail() or 'no reason given'}"
            )
        return info

    # -- serial console -----------------------------------------------------------------------

    def console(self, timeout: float = 60.0) -> Any:
        """An aexpect ShellSession on the serial console, logged in (prompt seen)."""
        from mhtest.virt.console import open_console, wait_prompt

        if self._console is None or not self._console.is_alive():
            self._console = open_console(self._socket_path("console.sock"), self.config.prompt)
        try:
            return wait_prompt(self._console, timeout)
        except TimeoutError as exc:
            raise VMError(
                f"VM {self.name}: no shell prompt on the serial console within {timeout:.0f}s "
                f"({exc}); see {self.console_log_path}"
            ) from None
