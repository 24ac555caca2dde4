"""A control file's hosts: machines as given, create_host and SSHHost resolving names as
--hosts does (the job's places, ssh_config aliases, inventory names), hosts as places."""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from mhtest.autoserv.hosts import hosts_module, place_of
from mhtest.autoserv.machine_modules import kernel_modules, kvm_module
from mhtest.autoserv.runtime import Runtime
from mhtest.hosts.inventory import HostConfig
from mhtest.hosts.local import LocalHost
from mhtest.spec import CONTROL_SERVER, TestSpec
from mhtest.virt.testing import qemu_pids, wait_no_qemu


@pytest.fixture
def runtime(tmp_path: Path):
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host alias1\n    HostName 127.0.0.5\n    User tester\n    Port 2201\n")
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("all:\n  hosts:\n    web1:\n      ansible_host: 127.0.0.6\n")
    places = [HostConfig(name="h1", address="127.0.0.2"), HostConfig(name="h1", address="x")]
    spec = TestSpec(
        ref="j.srv",
        kind=CONTROL_SERVER,
        path=str(tmp_path / "j.srv"),
        hosts=[asdict(p) for p in places],
        host_options={"ssh_config": str(ssh_config), "inventory": str(inventory)},
        params={"args": "-t 'two words'"},
        logdir=str(tmp_path / "logdir"),
    )
    made = Runtime(spec, lambda *a, **k: None)
    yield made
    made.close()


def test_machines_and_args_as_given(runtime: Runtime) -> None:
    assert runtime.machines == ["h1"]  # duplicates dropped
    assert runtime.args == ["-t", "two words"]


def test_names_resolve_as_hosts_does(runtime: Runtime) -> None:
    hosts = hosts_module(runtime)
    job_host = hosts.create_host("h1", initialize=True)
    assert (job_host.hostname, job_host.name) == ("127.0.0.2", "h1")
    alias = hosts.create_host("alias1")
    assert (alias.hostname, alias.user, alias.port) == ("127.0.0.5", "tester", 2201)
    assert hosts.create_host("web1").hostname == "127.0.0.6"
    assert isinstance(hosts.create_host("local"), LocalHost)
    # Autoserv's SSHHost: root unless the alias names a user; arguments win.
    assert hosts.SSHHost("10.0.0.9").user == "root"
    assert hosts.SSHHost("alias1").user == "tester"
    assert hosts.SSHHost("alias1", user="me", port=22).port == 22
    assert len(runtime.opened) == 7  # each closed when the control file ends


def test_a_host_as_a_place(runtime: Runtime) -> None:
    hosts = hosts_module(runtime)
    place = place_of(runtime, hosts.create_host("alias1"))
    assert (place.name, place.address, place.port, place.user) == (
        "alias1",
        "127.0.0.5",
        2201,
        "tester",
    )
    assert place_of(runtime, "h1").address == "127.0.0.2"
    assert place_of(runtime, LocalHost("lab")).is_local
    assert place_of(runtime, None).is_local
    with pytest.raises(TypeError, match="not a host"):
        place_of(runtime, 42)


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU")
def test_kvm_guests_of_a_control_file_end_with_it(runtime: Runtime, tmp_path: Path) -> None:
    """kvm.KVM and hosts.KVMGuest as the seed's control file uses them: a real QEMU (a
    blank disk: it never boots), ended when the control file ends though nobody closed it."""
    names = {"hosts": hosts_module(runtime), **kernel_modules(), "kvm": kvm_module(runtime)}
    assert names["deb_kernel"].DEBKernel and names["rpm_kernel"].RPMKernel
    blank = tmp_path / "blank.img"
    with open(blank, "wb") as out:
        out.truncate(16 << 20)
    kvm_here = names["kvm"].KVM(names["hosts"].create_host("local"))
    kvm_here.install(accel="tcg")
    guest = names["hosts"].KVMGuest(kvm_here, f"-m 64 -drive file={blank},format=raw")
    assert guest.qemu.pid in qemu_pids(blank)
    assert runtime.opened[-2:] == [kvm_here, guest]
    runtime.close()
    assert wait_no_qemu(blank, timeout=20) == []
