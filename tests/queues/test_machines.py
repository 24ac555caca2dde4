"""A queue's machines: .machines lines, or the spool's name; unknown hosts are one line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mhtest.queue.machines import MachinesError, MachinesUnavailable, queue_machines
from mhtest.queue.spool import Spool

pytestmark = pytest.mark.timeout(60)

INVENTORY = """\
all:
  children:
    pair:
      hosts:
        web1: {ansible_host: 127.0.0.2, ansible_port: 2201}
        web2: {ansible_host: 127.0.0.3, ansible_port: 2202}
"""


def spool(tmp_path: Path, name: str, machines: str | None) -> Spool:
    path = tmp_path / name
    path.mkdir()
    if machines is not None:
        (path / ".machines").write_text(machines)
    return Spool(path)


def test_machines_file_lines_aliases_and_inventory_groups(tmp_path: Path) -> None:
    (tmp_path / "ssh_config").write_text("Host box\n  HostName 127.0.0.9\n  Port 2209\n")
    (tmp_path / "inv.yaml").write_text(INVENTORY)
    queue = spool(tmp_path, "x86_64", "# the lab\nbox\n\npair   # both of them\nlocal\nbox\n")
    found = queue_machines(queue, str(tmp_path / "inv.yaml"), str(tmp_path / "ssh_config"))
    assert [(m.name, m.key) for m in found] == [
        ("box", "127.0.0.9:2209"),
        ("web1", "127.0.0.2:2201"),
        ("web2", "127.0.0.3:2202"),
        ("local", "local"),
    ]


def test_the_spools_name_is_its_machine_without_a_machines_file(tmp_path: Path) -> None:
    [found] = queue_machines(spool(tmp_path, "127.0.0.5", None), ssh_config="/dev/null")
    assert (found.name, found.key, found.config.address) == (
        "127.0.0.5",
        "127.0.0.5:22",
        "127.0.0.5",
    )


def test_an_alias_and_its_address_are_one_machine(tmp_path: Path) -> None:
    (tmp_path / "ssh_config").write_text("Host h1\n  HostName 127.0.0.2\n  Port 2222\n")
    config = str(tmp_path / "ssh_config")
    [by_alias] = queue_machines(spool(tmp_path, "a", "h1\n"), ssh_config=config)
    [by_address] = queue_machines(spool(tmp_path, "b", "root@127.0.0.2:2222\n"), ssh_config=config)
    assert by_alias.key == by_address.key == "127.0.0.2:2222"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "local\nno-such-host.invalid\n",
            ".machines:2: unknown host 'no-such-host.invalid': not an inventory name, an "
            "ssh_config alias nor a host name that resolves",
        ),
        ("root@@x\n", ".machines:1: malformed host 'root@@x'"),
        ("# nobody\n\n", ".machines: names no machines (one host a line)"),
    ],
)
def test_bad_machines_are_one_line_naming_the_file_and_line(
    tmp_path: Path, text: str, reason: str
) -> None:
    queue = spool(tmp_path, "q", text)
    with pytest.raises(MachinesError) as caught:
        queue_machines(queue, ssh_config="/dev/null")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{queue.path}/{reason}"), message


def test_an_unknown_queue_name_is_one_line_too(tmp_path: Path) -> None:
    def lookup(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(
        MachinesError,
        match=r"no \.machines: the queue's name is its machine\): unknown host 'lonehost'",
    ):
        queue_machines(spool(tmp_path, "lonehost", None), ssh_config="/dev/null", lookup=lookup)


def test_a_name_service_that_does_not_answer_is_not_an_unknown_host(tmp_path: Path) -> None:
    def lookup(*args, **kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(MachinesUnavailable, match=r":1: cannot look 'lab1' up now \(Temporary"):
        queue_machines(spool(tmp_path, "q", "lab1\n"), ssh_config="/dev/null", lookup=lookup)
