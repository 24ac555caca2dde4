"""SSHHost against real sshd hosts: commands, timeouts, helpers, shell, threads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mhtest.hosts import CmdError, CmdResult, CmdTimeout, SSHHost

pytestmark = pytest.mark.timeout(60)


def test_run_returns_everything_about_the_command(ssh_host: SSHHost) -> None:
    result = ssh_host.run("echo out; echo err >&2; exit 3", ignore_status=True)
    assert isinstance(result, CmdResult)
    assert result.command == "echo out; echo err >&2; exit 3"
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.aborted == 0 and not result.ok
    assert 0 < result.duration < 30
    printed = str(result)
    for piece in ("echo out; echo err", "Exit status: 3", "Duration:", "Aborted: 0", "out", "err"):
        assert piece in printed


def test_nonzero_exit_raises_cmd_error_with_the_result(ssh_host: SSHHost) -> None:
    with pytest.raises(CmdError) as info:
        ssh_host.run("echo broken >&2; exit 7")
    assert info.value.result.exit_status == 7
    assert "broken" in str(info.value) and "7" in str(info.value)
    assert ssh_host.name in str(info.value)


def test_args_are_quoted_and_env_is_exported(ssh_host: SSHHost) -> None:
    tricky = ["a b", "$HOME", "'; touch /tmp/mhtest-pwned; '", "*"]
    out = ssh_host.run("printf '%s\\n'", args=tricky).stdout
    assert out.splitlines() == tricky
    assert ssh_host.run("test -e /tmp/mhtest-pwned", ignore_status=True).exit_status == 1
    env = {"GREETING": "hello world", "QUOTE": "it's"}
    result = ssh_host.run('echo "$GREETING|$QUOTE"', env=env)
    assert result.stdout == "hello world|it's\n"
    assert result.command == 'echo "$GREETING|$QUOTE"'  # env values (secrets?) not shown


def test_stdin_large_and_binary(ssh_host: SSHHost) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB: more than a channel window at once
    result = ssh_host.run("sha256sum", stdin=data)
    import hashlib

    assert result.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert ssh_host.run("cat", stdin="text in\n").stdout == "text in\n"


def test_timeout_kills_the_whole_process_group(ssh_host: SSHHost) -> None:
    # Durations no other run on this machine uses: ps sees every process of the machine.
    unique = f"{time.time_ns() % 10**9:09d}"
    first, second = f"300.{unique}", f"301.{unique}"
    started = time.monotonic()
    with pytest.raises(CmdTimeout) as info:
        ssh_host.run(f"sleep {first} & sh -c 'sleep {second}; echo done'; wait", timeout=1)
    elapsed = time.monotonic() - started
    assert elapsed < 8
    assert info.value.result.aborted in (15, 9)
    assert "timed out after 1 s" in str(info.value)
    left = ssh_host.run(
        f"ps -eo stat=,args= | grep -v '^Z' | grep -e 'sleep {first}' -e 'sleep {second}' "
        "| grep -v grep",
        ignore_status=True,
    )
    assert left.stdout == "", f"left running after timeout: {left.stdout}"


def test_kill_escalates_to_sigkill_when_term_is_ignored(ssh_host: SSHHost) -> None:
    proc = ssh_host.start("trap '' TERM; echo armed; sleep 302 & sleep 302")
    assert proc.stdout.readline() == b"armed\n"  # the trap is set (however loaded the machine)
    proc.kill(grace=0.5)
    assert proc.killed_with == 9
    left = ssh_host.run(
        "ps -eo stat=,args= | grep -v '^Z' | grep 'sleep 30[2]'", ignore_status=True
    )
    assert left.stdout == ""


def test_signal_death_is_reported_as_aborted(ssh_host: SSHHost) -> None:
    result = ssh_host.run("kill -KILL $$", ignore_status=True)
    assert result.aborted == 9 and not result.ok
    with pytest.raises(CmdError, match="signal 9"):
        ssh_host.run("kill -KILL $$")


def test_one_connection_is_shared_by_threads(ssh_host: SSHHost) -> None:
    transport = ssh_host.transport()
    with ThreadPoolExecutor(max_workers=8) as pool:
        outs = list(pool.map(lambda i: ssh_host.run(f"echo {i}").stdout, range(12)))
    assert outs == [f"{i}\n" for i in range(12)]
    assert ssh_host.transport() is transport


def test_helpers_tmp_dir_cpus_boot_id(sshd_host) -> None:
    host = sshd_host.make_host()
    with host:
        tmp = host.get_tmp_dir()
        assert host.run("test -d", args=[tmp]).ok
        assert host.get_num_cpu() >= 1
        assert len(host.get_boot_id()) == 36
        assert host.is_up()
        assert host.wait_up(timeout=5)
    # close() removed the temporary directory (checked over a fresh connection)
    with sshd_host.make_host() as again:
        assert again.run("test -e", args=[tmp], ignore_status=True).exit_status == 1


def test_reconnects_after_close(ssh_host: SSHHost) -> None:
    ssh_host.run("true")
    ssh_host.close()
    assert ssh_host.run("echo back").stdout == "back\n"


def test_start_streams_stdout_live(ssh_host: SSHHost) -> None:
    proc = ssh_host.start("for i in 1 2 3; do echo line$i; sleep 0.3; done")
    arrivals = {}
    for raw in proc.stdout:
        arrivals[raw.decode().strip()] = time.monotonic()
    assert list(arrivals) == ["line1", "line2", "line3"]
    # line1 arrived while the command was still sleeping, not all at once at the end
    assert arrivals["line3"] - arrivals["line1"] > 0.4
    assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize("pty", [True, False])
def test_shell_session(sshd_host, ssh_host: SSHHost, pty: bool) -> None:
    if pty and not sshd_host.pty_ok:
        pytest.skip("the test sshd runs as an ordinary user: it cannot give out terminals")
    session = ssh_host.shell(pty=pty)
    try:
        assert session.cmd_output("echo hello; echo $((6*7))") == "hello\n42\n"
        session.sendline("echo ready-$((1+1))")
        _, text = session.read_until_any_line_matches([r"ready-2"], timeout=10)
        assert "ready-2" in text
        assert session.cmd_status("false") == 1
    finally:
        session.close()


SHELL_FROM_A_VENV = """
import json, sys
from mhtest.hosts.ssh import SSHHost
address, options = json.loads(sys.argv[1])
with SSHHost(address, **options) as host:
    session = host.shell(pty=False)
    print(session.cmd_output("echo $((6*7))").strip())
    session.close()
"""


def test_shell_session_when_the_environment_is_not_activated(sshd_host) -> None:
    # `.venv/bin/mhtest` as scripts/setup leaves it: the venv's bin (aexpect_helper) not on PATH.
    path = os.pathsep.join([os.path.dirname(shutil.which("ssh") or "/usr/bin/ssh"), "/bin"])
    options = {"port": sshd_host.port, "user": sshd_host.user, "key_file": sshd_host.key_file}
    options["known_hosts"] = sshd_host.known_hosts
    done = subprocess.run(
        [sys.executable, "-c", SHELL_FROM_A_VENV, json.dumps([sshd_host.address, options])],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr[-2000:]


def test_wait_down_on_a_live_host_times_out(ssh_host: SSHHost) -> None:
    started = time.monotonic()
    assert ssh_host.wait_down(timeout=1) is False
    assert time.monotonic() - started < 5


def test_a_name_is_resolved_through_ssh_config_as_the_cli_does(sshd_host, tmp_path, monkeypatch):
    """SSHHost("alias") used to ignore ~/.ssh/config while `--hosts alias` honoured it."""
    from mhtest.hosts.inventory import make_host, resolve_hosts

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host box\n  HostName {sshd_host.address}\n  Port {sshd_host.port}\n"
        f"  User {sshd_host.user}\n  IdentityFile {sshd_host.key_file}\n"
        f"  UserKnownHostsFile {sshd_host.known_hosts}\n"
    )
    monkeypatch.setenv("HOME", str(home))
    with SSHHost("box") as host:
        assert (host.name, host.hostname, host.port) == ("box", sshd_host.address, sshd_host.port)
        assert host.run("echo $SSH_CONNECTION").stdout.split()[2] == sshd_host.address
    (config,) = resolve_hosts("box")
    with make_host(config) as same:
        assert (same.hostname, same.port, same.user) == (host.hostname, host.port, host.user)
    # what is given wins over the file, and the file can be named or left out
    explicit = SSHHost("box", port=2, ssh_config=str(home / ".ssh" / "config"))
    assert (explicit.hostname, explicit.port) == (sshd_host.address, 2)
    assert SSHHost("box", ssh_config=False).hostname == "box"
