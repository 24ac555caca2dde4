"""Host strings, ssh_config aliases and YAML inventories, used against real sshd hosts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mhtest.hosts import HostSpecError, LocalHost, SSHHost
from mhtest.hosts.inventory import (
    HostConfig,
    load_inventory,
    make_host,
    parse_host_string,
    resolve_hosts,
)

pytestmark = pytest.mark.timeout(60)

NO_CONFIG = "/dev/null"  # an empty ssh_config: keep the user's ~/.ssh/config out of the tests


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web1", (None, "web1", None)),
        ("root@10.0.0.5", ("root", "10.0.0.5", None)),
        ("127.0.0.2:2222", (None, "127.0.0.2", 2222)),
        ("deploy@db-1.example.com:22", ("deploy", "db-1.example.com", 22)),
        ("root@[::1]:2200", ("root", "::1", 2200)),
    ],
)
def test_parse_host_string(text: str, expected: tuple) -> None:
    assert parse_host_string(text) == expected


@pytest.mark.parametrize(
    "bad", ["root@", "@host", "host:", "host:99999", "host:abc", "a b", "user@host@x", "h;rm -rf"]
)
def test_malformed_host_strings_are_one_line_errors(bad: str) -> None:
    with pytest.raises(HostSpecError) as err:
        parse_host_string(bad)
    assert bad in str(err.value) and "\n" not in str(err.value)


def test_resolve_plain_strings_and_local() -> None:
    configs = resolve_hosts("root@127.0.0.2:2222, 127.0.0.3,local", ssh_config_path=NO_CONFIG)
    assert [(c.name, c.address, c.port, c.user) for c in configs] == [
        ("root@127.0.0.2:2222", "127.0.0.2", 2222, "root"),
        ("127.0.0.3", "127.0.0.3", 22, None),
        ("local", "local", 0, None),
    ]
    assert isinstance(make_host(configs[2]), LocalHost)
    with pytest.raises(HostSpecError, match="empty host name"):
        resolve_hosts("a,,b", ssh_config_path=NO_CONFIG)


def test_ssh_config_alias_reaches_the_real_host(sshd_host) -> None:
    (config,) = resolve_hosts(sshd_host.alias, ssh_config_path=sshd_host.ssh_config)
    assert (config.address, config.port, config.user) == (
        sshd_host.address,
        sshd_host.port,
        sshd_host.user,
    )
    assert config.key_file == sshd_host.key_file
    assert config.known_hosts == sshd_host.known_hosts
    with make_host(config) as host:
        assert isinstance(host, SSHHost)
        assert host.name == sshd_host.alias
        assert host.run("echo via-alias").stdout == "via-alias\n"


def write_inventory(path: Path, infos) -> Path:
    a, b = infos
    path.write_text(
        f"""
all:
  vars:
    ansible_user: {a.user}
    ansible_ssh_private_key_file: {a.key_file}
    site: lab
  hosts:
    server:
      ansible_host: {a.address}
      ansible_port: {a.port}
      role: server
  children:
    clients:
      vars:
        role: client
      hosts:
        client1:
          ansible_host: {b.address}
          ansible_port: {b.port}
          threads: 4
"""
    )
    return path


def test_inventory_hosts_groups_and_params(sshd_hosts, tmp_path: Path) -> None:
    infos = sshd_hosts(2)
    path = write_inventory(tmp_path / "hosts.yaml", infos)
    inventory = load_inventory(str(path))
    assert inventory.groups["clients"] == ["client1"]
    assert inventory.groups["all"] == ["server", "client1"]
    server = inventory.hosts["server"]
    assert server == HostConfig(
        name="server",
        address=infos[0].address,
        port=infos[0].port,
        user=infos[0].user,
        key_file=infos[0].key_file,
        params={"site": "lab", "role": "server"},
    )
    assert inventory.hosts["client1"].params == {"site": "lab", "role": "client", "threads": 4}

    configs = resolve_hosts("clients,server", inventory_path=str(path), ssh_config_path=NO_CONFIG)
    assert [c.name for c in configs] == ["client1", "server"]
    for config, info in zip(configs, reversed(infos)):
        with make_host(config, known_hosts=info.known_hosts) as host:
            assert host.params["role"] in ("client", "server")
            assert host.run("echo", args=[host.name]).stdout == f"{config.name}\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("all: [\n", "invalid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("all:\n  hosts: [a, b]\n", "all.hosts must be a mapping"),
        ("all:\n  hosts:\n    h1:\n      ansible_port: http\n", "ansible_port 'http'"),
        ("all:\n  hostz:\n    h1: {}\n", "unknown key(s) ['hostz']"),
        ("all:\n  hosts:\n    h1: 5\n", "host 'h1' must be a mapping"),
    ],
)
def test_malformed_inventory_is_one_line_error_naming_the_file(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(HostSpecError) as err:
        resolve_hosts("h1", inventory_path=str(path), ssh_config_path=NO_CONFIG)
    message = str(err.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_missing_inventory_file(tmp_path: Path) -> None:
    with pytest.raises(HostSpecError, match="cannot read"):
        load_inventory(str(tmp_path / "nope.yaml"))


def test_ssh_config_match_exec_works_with_invoke_deferred(tmp_path: Path) -> None:
    """mhtest imports paramiko without invoke (mhtest.hosts._paramiko); `Match exec` still works.

    In a fresh interpreter, since this one may have imported paramiko already.
    """
    config = tmp_path / "ssh_config"
    config.write_text('Match exec "exit 0"\n  User matched\nHost *\n  Port 2200\n')
    script = f"""
import json, sys
from mhtest.hosts import _paramiko
from mhtest.hosts.inventory import resolve_hosts
_paramiko.load()
deferred = "paramiko" in sys.modules and "invoke" not in sys.modules
[host] = resolve_hosts("box", ssh_config_path={str(config)!r})
import invoke
print(json.dumps([deferred, host.user, host.port, hasattr(invoke, "run")]))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == [True, "matched", 2200, True]


def test_threads_that_load_paramiko_at_once_all_get_the_whole_module() -> None:
    """Two queue watchers read ssh_config at once: the one that did not import paramiko
    waited for it (it was handed a half-imported module, without SSHConfig)."""
    script = """
import sys, threading
from mhtest.hosts import _paramiko
got = []
def load():
    got.append(hasattr(_paramiko.load(), "SSHConfig"))
first = threading.Thread(target=load)
first.start()
while "paramiko" not in sys.modules:
    pass
load()  # while the first thread is still importing it
first.join()
print(got)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[True, True]"
