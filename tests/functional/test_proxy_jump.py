"""Hosts behind a jump host (ProxyJump), or a ProxyCommand, as in an ssh_config file or an
Ansible inventory: real sshd hosts of a private pool, so that the jump host can be taken down
and the host behind it is then out of reach, which shows the way really goes through it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mhtest.hosts import HostUnreachable, SSHHost
from mhtest.hosts.errors import HostSpecError
from mhtest.hosts.inventory import make_host, resolve_hosts
from mhtest.hosts.testing import SshdPool

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def pair(tmp_path: Path):
    """(pool, jump host, host behind, ssh_config): `behind` reached through `jumpbox`."""
    with SshdPool(tmp_path / "sshd") as pool:
        jump, target = pool.hosts(2)
        config = tmp_path / "ssh_config"
        common = f"  User {jump.user}\n  IdentityFile {jump.key_file}\n"
        common += f"  UserKnownHostsFile {jump.known_hosts}\n"
        config.write_text(
            f"Host jumpbox\n  HostName {jump.address}\n  Port {jump.port}\n{common}"
            f"Host behind\n  HostName {target.address}\n  Port {target.port}\n{common}"
            "  ProxyJump jumpbox\n"
            f"Host twohops\n  HostName {target.address}\n  Port {target.port}\n{common}"
            f"  ProxyJump jumpbox,{jump.user}@{jump.address}:{jump.port}\n"
            f"Host loop\n  HostName {target.address}\n  ProxyJump loop\n"
        )
        yield pool, jump, target, str(config)


def test_a_host_behind_a_jump_host(pair) -> None:
    pool, jump, _target, config = pair
    with SSHHost("behind", ssh_config=config, connect_timeout=5) as host:
        assert host.jump.address == jump.address and host.jump.port == jump.port
        assert host.run("echo behind").stdout == "behind\n"
        assert host.jump_host().run("echo jump").stdout == "jump\n"
    pool.stop_host(jump)  # no way through now: the host behind is out of reach
    try:
        with (
            SSHHost("behind", ssh_config=config, connect_timeout=3) as host,
            pytest.raises(HostUnreachable) as caught,
        ):
            host.run("true")
        message = str(caught.value)
        assert message.startswith("behind: cannot reach") and "through jumpbox" in message
    finally:
        pool.start_host(jump)
    with SSHHost("twohops", ssh_config=config, connect_timeout=5) as host:
        assert host.jump.jump is not None  # the second hop, reached through the first
        assert host.run("echo two").stdout == "two\n"


def test_openssh_commands_take_the_same_way(pair) -> None:
    _pool, _jump, _target, config = pair
    with SSHHost("behind", ssh_config=config, connect_timeout=5) as host:
        done = subprocess.run(
            [*host.ssh_command(), "echo", "openssh"], capture_output=True, text=True, timeout=30
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "openssh\n"


RELAY = textwrap.dedent(
    """
    import os, socket, sys, threading
    with open(sys.argv[3], "a") as mark:
        mark.write(f"{sys.argv[1]}:{sys.argv[2]}\\n")
    sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
    def up():
        while True:
            data = os.read(0, 65536)
            if not data:
                break
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    threading.Thread(target=up, daemon=True).start()
    while True:
        data = sock.recv(65536)
        if not data:
            break
        os.write(1, data)
    """
)


def test_a_host_reached_through_a_proxy_command(pair, tmp_path) -> None:
    _pool, jump, target, config = pair
    relay, marks = tmp_path / "relay.py", tmp_path / "marks"
    relay.write_text(RELAY)
    with open(config, "a") as out:
        out.write(
            f"Host viacmd\n  HostName {target.address}\n  Port {target.port}\n"
            f"  User {jump.user}\n  IdentityFile {jump.key_file}\n"
            f"  UserKnownHostsFile {jump.known_hosts}\n"
            f"  ProxyCommand {sys.executable} {relay} %h %p {marks}\n"
        )
    with SSHHost("viacmd", ssh_config=config, connect_timeout=5) as host:
        assert host.run("echo via").stdout == "via\n"
    assert marks.read_text() == f"{target.address}:{target.port}\n"


def test_an_inventory_host_behind_a_jump_host(pair, tmp_path) -> None:
    pool, jump, target, config = pair
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "all:\n  hosts:\n"
        f"    lab1: {{ansible_host: {target.address}, ansible_port: {target.port}, "
        f"ansible_user: {target.user}, ansible_ssh_private_key_file: {target.key_file}, "
        f'ansible_ssh_common_args: "-o StrictHostKeyChecking=yes -J jumpbox '
        f'-o UserKnownHostsFile={target.known_hosts}"}}\n'
    )
    (lab1,) = resolve_hosts("lab1", str(inventory), config)
    assert (lab1.jump.name, lab1.jump.address) == ("jumpbox", jump.address)
    assert lab1.known_hosts == target.known_hosts
    with make_host(lab1) as host:
        assert host.run("echo lab1").stdout == "lab1\n"


def test_a_jump_that_loops_is_one_line(pair) -> None:
    *_, config = pair
    with pytest.raises(HostSpecError, match="ProxyJump 'loop': no hosts, or over 8 hops"):
        SSHHost("loop", ssh_config=config)


PASS_PY = """
from mhtest import Test


class Behind(Test):
    def test(self):
        self.log.info("ran behind the jump host")
"""


def test_mhtest_run_on_a_host_behind_a_jump_host(pair, mhtest, write_tests, warm_hosts) -> None:
    warm_hosts(1)  # mhtest's environment is cached for this machine's user: hosts share it
    *_, config = pair
    base = write_tests({"behind.py": PASS_PY})
    run = mhtest("run", str(base / "behind.py"), "--hosts", "behind", "--ssh-config", config)
    assert run.code == 0, run
    result = run.result("behind.py:Behind.test")
    assert result["status"] == "PASS" and result["host"] == "behind", result
    assert "ran behind the jump host" in Path(result["logdir"], "debug.log").read_text()


PAIR_PY = '''
from mhtest import MultiHostTest, Test


class Pair(MultiHostTest):
    timeout = 60

    def test(self):
        self.run_workers([self.worker("pair.py:Side.test", h) for h in self.hosts])


class Side(Test):
    """:mhtest: worker"""

    def test(self):
        self.sync.barrier("met", timeout=30)
        seen = self.sync.exchange("where", "here")
        assert sorted(seen) == ["behind", "local"], seen
'''


def test_a_worker_behind_a_jump_host_meets_the_others(pair, mhtest, write_tests, warm_hosts):
    """Its sync traffic goes back through the jump host (the forward of its connection)."""
    warm_hosts(1)
    *_, config = pair
    base = write_tests({"pair.py": PAIR_PY})
    hosts = ["--hosts", "behind,local", "--ssh-config", config]
    run = mhtest("run", f"{base}/pair.py:Pair.test", *hosts, timeout=90)
    assert run.code == 0, run
    pair_result = run.result("pair.py:Pair.test")
    children = {c["name"]: c["status"] for c in pair_result["children"]}
    assert children == {"behind": "PASS", "local": "PASS"}, pair_result
