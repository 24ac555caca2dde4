"""Real QEMU on this machine: the VM class, QMP, and migration between two local QEMUs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mhtest.virt.guest import MemoryPattern, incoming_config
from mhtest.virt.qemu import VM, MigrationError, VMConfig, VMStartError
from mhtest.virt.qmp import QMPCommandError

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None,
    reason="qemu-system-x86_64 not installed (apt-get install qemu-system-x86)",
)


def pid_gone(pid: int, wait: float = 5.0) -> bool:
    """True when ``pid`` has exited (a zombie counts as exited) within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def pattern(tmp_path: Path) -> MemoryPattern:
    return MemoryPattern.create(tmp_path / "pattern.bin", seed=7)


def started_pair(tmp_path: Path, config: VMConfig) -> tuple[VM, VM, int]:
    """A running source and a deferred-incoming destination listening on a kernel-chosen port."""
    src = VM(config, tmp_path / "src").start()
    dst = VM(incoming_config(config), tmp_path / "dst").start(incoming=True)
    host, port = dst.migrate_incoming("tcp:127.0.0.1:0")
    assert host == "127.0.0.1" and port > 0
    return src, dst, port


@pytest.mark.timeout(60)
def test_vm_lifecycle_status_events_and_quit(tmp_path: Path) -> None:
    with VM(VMConfig("life", memory_mb=64), tmp_path).start() as vm:
        pid = vm.pid
        assert vm.status() == "running"
        assert vm.accel() in ("kvm", "tcg")
        mark = vm.event_mark()
        vm.stop()
        assert vm.wait_event("STOP", 10, since=mark)["event"] == "STOP"
        assert vm.status() == "paused" and not vm.is_running()
        mark = vm.event_mark()
        vm.cont()
        vm.wait_event("RESUME", 10, since=mark)
        assert vm.is_running()
        vm.quit()
        assert not vm.is_alive()
    assert pid_gone(pid)
    assert (tmp_path / "qemu.log").exists()


@pytest.mark.timeout(30)
def test_qmp_error_names_vm_and_quotes_qemu(tmp_path: Path) -> None:
    with VM(VMConfig("errvm", memory_mb=64), tmp_path).start() as vm:
        with pytest.raises(QMPCommandError) as err:
            vm.set_migrate_capabilities({"no-such-capability": True})
        assert "errvm" in str(err.value)
        assert "no-such-capability" in err.value.desc  # QEMU's own message
        with pytest.raises(QMPCommandError, match="errvm.*no-such-command"):
            vm.cmd("no-such-command")


@pytest.mark.timeout(60)
def test_memory_survives_migration(tmp_path: Path, pattern: MemoryPattern) -> None:
    config = pattern.config(VMConfig("mem", memory_mb=128))
    src, dst, port = started_pair(tmp_path, config)
    with src, dst:
        # Destination has no loader: its RAM can only get the pattern through migration.
        assert pattern.dump_sha256(dst, tmp_path / "dst-before.bin") != pattern.sha256
        assert pattern.dump_sha256(src, tmp_path / "src.bin") == pattern.sha256
        src.set_migrate_capabilities({"events": True})
        mark = dst.event_mark()
        src.migrate(f"tcp:127.0.0.1:{port}")
        info = src.wait_migration(30)
        assert info["status"] == "completed"
        assert info["total-time"] >= 0 and "downtime" in info
        assert info["ram"]["transferred"] > pattern.size / 2
        dst.wait_event("RESUME", 10, since=mark)
        assert dst.status() == "running"
        assert src.status() == "postmigrate" and not src.is_running()
        assert pattern.dump_sha256(dst, tmp_path / "dst.bin") == pattern.sha256
        pids = [src.pid, dst.pid]
    assert all(pid_gone(p) for p in pids)


@pytest.mark.timeout(60)
def test_cancel_midway_keeps_vm_on_source(tmp_path: Path, pattern: MemoryPattern) -> None:
    config = pattern.config(VMConfig("cancel", memory_mb=128))
    src, dst, port = started_pair(tmp_path, config)
    with src, dst:
        # 8 MiB of random bytes at 1 MiB/s: the migration cannot finish before we cancel.
        src.set_migrate_parameters({"max-bandwidth": 1 << 20})
        src.migrate(f"tcp:127.0.0.1:{port}")
        deadline = time.monotonic() + 10
        while src.query_migrate().get("ram", {}).get("transferred", 0) < 100_000:
            assert time.monotonic() < deadline, src.query_migrate()
            time.sleep(0.05)
        src.migrate_cancel()
        info = src.wait_migration(10)
        assert info["status"] == "cancelled"
        assert src.status() == "running"
        assert pattern.dump_sha256(src, tmp_path / "src.bin") == pattern.sha256
        # The half-fed destination gives up on its own.
        assert pid_gone(dst.pid, wait=10)


@pytest.mark.timeout(30)
def test_destination_cannot_start_clear_error(tmp_path: Path) -> None:
    config = VMConfig("badvm", memory_mb=64, kernel=str(tmp_path / "no-such-kernel"))
    vm = VM(config, tmp_path)
    with pytest.raises(VMStartError) as err:
        vm.start(incoming=True)
    msg = str(err.value)
    assert "badvm" in msg and "no-such-kernel" in msg  # QEMU's own complaint
    assert vm.pid is not None and pid_gone(vm.pid)


@pytest.mark.timeout(30)
def test_paths_with_commas(tmp_path: Path) -> None:
    """QEMU separates options with commas: paths holding one must still work."""
    pattern = MemoryPattern.create(tmp_path / "a,pattern.bin", seed=3, size=1 << 20)
    config = pattern.config(VMConfig("comma", memory_mb=64))
    with VM(config, tmp_path / "dir,with,commas").start() as vm:
        assert pattern.dump_sha256(vm, tmp_path / "dump.bin") == pattern.sha256
        assert (tmp_path / "dir,with,commas" / "qemu.log").exists()


@pytest.mark.timeout(30)
def test_missing_qemu_binary_clear_error(tmp_path: Path) -> None:
    vm = VM(VMConfig("nobin", qemu_binary=str(tmp_path / "no-qemu")), tmp_path)
    with pytest.raises(VMStartError, match="nobin: cannot run .*no-qemu: not found"):
        vm.start()
    assert vm.pid is None


@pytest.mark.timeout(30)
def test_migration_to_gone_destination_fails_with_qemu_reason(tmp_path: Path) -> None:
    config = VMConfig("lonely", memory_mb=64)
    src, dst, port = started_pair(tmp_path, config)
    with src:
        dst.cleanup()  # the port it listened on is closed now
        src.migrate(f"tcp:127.0.0.1:{port}")
        with pytest.raises(MigrationError, match="lonely.*(refused|Failed)"):
            src.wait_migration(10)
        assert src.status() == "running"


@pytest.mark.timeout(30)
def test_no_qemu_left_when_worker_is_killed(tmp_path: Path) -> None:
    """A worker killed with SIGKILL (no atexit, no finally) still takes its QEMU along."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from mhtest.virt.qemu import VM, VMConfig
        vm = VM(VMConfig("orphan", memory_mb=64), {str(tmp_path)!r}).start()
        print(vm.pid, flush=True)
        time.sleep(60)
        """
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as child:
        try:
            qemu_pid = int(child.stdout.readline())
            assert not pid_gone(qemu_pid, wait=0.2)
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
            assert pid_gone(qemu_pid, wait=5)
        finally:
            if child.poll() is None:
                child.kill()


@pytest.mark.timeout(30)
def test_cleanup_on_exception_inside_context(tmp_path: Path) -> None:
    vm = VM(VMConfig("ctx", memory_mb=64), tmp_path)
    with pytest.raises(RuntimeError, match="boom"), vm.start():
        raise RuntimeError("boom")
    assert vm.pid is not None and pid_gone(vm.pid)


def fifo_readers(fifo: str) -> list[int]:
    """PIDs of processes whose command line names ``fifo`` (the `cat` an exec: migration runs)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and fifo.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return [p for p in found if not pid_gone(p, wait=0.1)]


@pytest.mark.timeout(60)
def test_migration_through_a_named_pipe(tmp_path: Path, pattern: MemoryPattern) -> None:
    config = pattern.config(VMConfig("pipe", memory_mb=64))
    with VM(config, tmp_path / "src").start() as src:
        with VM(incoming_config(config), tmp_path / "dst").start(incoming=True) as dst:
            fifo = dst.migrate_incoming_fifo()
            assert Path(fifo).is_fifo() and not Path(fifo).is_relative_to(tmp_path)
            src.migrate(f"exec:cat > {fifo}")
            assert src.wait_migration(30)["status"] == "completed"
            assert dst.wait_migration_status(("completed",), 10)["status"] == "completed"
            assert pattern.dump_sha256(dst, tmp_path / "dst.bin") == pattern.sha256
        assert not Path(fifo).exists()


@pytest.mark.timeout(30)
def test_a_pipe_nobody_writes_leaves_no_reader_behind(tmp_path: Path) -> None:
    with VM(VMConfig("nowriter", memory_mb=64), tmp_path).start(incoming=True) as dst:
        fifo = dst.migrate_incoming_fifo()
        deadline = time.monotonic() + 5
        while not fifo_readers(fifo):  # QEMU's `cat` waits for a writer
            assert time.monotonic() < deadline, "QEMU did not start cat on the pipe"
            time.sleep(0.05)
    deadline = time.monotonic() + 5
    while fifo_readers(fifo):
        assert time.monotonic() < deadline, f"left behind: {fifo_readers(fifo)}"
        time.sleep(0.05)


@pytest.mark.timeout(30)
def test_a_stopped_qemu_is_ended_at_once(tmp_path: Path) -> None:
    vm = VM(VMConfig("stopped", memory_mb=64), tmp_path).start(paused=True)
    assert vm.status() == "prelaunch"
    os.kill(vm.pid, signal.SIGSTOP)
    started = time.monotonic()
    vm.cleanup()
    assert time.monotonic() - started < 1.5 and pid_gone(vm.pid)


@pytest.mark.timeout(30)
def test_migration_settings_go_back_to_what_qemu_had(tmp_path: Path) -> None:
    with VM(VMConfig("settings", memory_mb=64), tmp_path).start() as vm:
        own = vm.cmd("query-migrate-parameters")

        def caps() -> dict:
            return {c["capability"]: c["state"] for c in vm.cmd("query-migrate-capabilities")}

        vm.apply_migration_settings({"xbzrle": True}, {"max-bandwidth": 1 << 20})
        assert caps()["xbzrle"] and vm.cmd("query-migrate-parameters")["max-bandwidth"] == 1 << 20
        vm.apply_migration_settings({"events": True}, {"downtime-limit": 400})
        params = vm.cmd("query-migrate-parameters")
        assert params["max-bandwidth"] == own["max-bandwidth"] and params["downtime-limit"] == 400
        assert caps()["events"] and not caps()["xbzrle"]
