"""host.power: the `command` and `ipmi` plugins, choosing one from an inventory, and every
way power control fails (one line naming the host, the plugin and its file or command).

The qmp plugin is exercised on real guests in tests/hosts/test_kvm_guest.py. ipmitool is
replaced here by a script that records how it was called: there is no BMC to talk to.
"""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

from mhtest.hosts.local import LocalHost
from mhtest.hosts.power import Power, PowerError


def host_with(power: object, name: str = "lab1") -> LocalHost:
    return LocalHost(name=name, params={"power": power})


def test_command_plugin_runs_the_configured_command_with_fields(tmp_path: Path) -> None:
    log = tmp_path / "pdu.log"
    host = host_with(
        {
            "type": "command",
            "hardreset": f"echo reset {{name}} outlet {{outlet}} >> {log}",
            "power_off": f"echo off {{outlet}} >> {log}",
            "power_on": f"echo on {{outlet}} >> {log}",
            "outlet": 6,
            "cycle_delay": 0,
        }
    )
    host.power.hardreset()
    host.power.power_cycle()  # no command of its own: off, then on
    assert log.read_text().splitlines() == ["reset lab1 outlet 6", "off 6", "on 6"]
    assert str(host.power) == "command power control"


def test_hardreset_without_waiting_goes_through_the_plugin(tmp_path: Path) -> None:
    log = tmp_path / "reset.log"
    host = host_with({"type": "command", "hardreset": f"touch {log}"})
    host.hardreset(wait=False)
    assert log.exists()


def test_failing_command_is_one_line_naming_host_and_command() -> None:
    host = host_with({"type": "command", "hardreset": "echo outlet 6 is locked >&2; exit 3"})
    with pytest.raises(PowerError) as err:
        host.power.hardreset()
    message = str(err.value)
    assert message.startswith("lab1: power hardreset command ")
    assert "exit status 3" in message and "outlet 6 is locked" in message
    assert "\n" not in message


def test_power_is_refused_in_one_line_when_not_configured_or_unknown() -> None:
    with pytest.raises(PowerError, match=r"lab1: no power control: give the host a `power`"):
        host_with(None).power  # noqa: B018 - the property is what is tested
    with pytest.raises(PowerError, match=r"lab1: no power plugin 'pdu9000' \(built in: qmp"):
        host_with({"type": "pdu9000"}).power  # noqa: B018
    with pytest.raises(PowerError, match="lab1: command power control needs at least one of"):
        host_with({"type": "command"}).power  # noqa: B018
    with pytest.raises(PowerError, match="qmp power control is for VM guests"):
        host_with("qmp").power  # noqa: B018
    with pytest.raises(PowerError, match=r"unknown field 'outlet'"):
        host_with({"type": "command", "power_on": "pdu on {outlet}"}).power.power_on()
    with pytest.raises(PowerError, match="cannot power off"):
        host_with({"type": "command", "power_on": "true"}).power.power_off()


def test_a_broken_plugin_is_one_line_naming_its_file(tmp_path: Path) -> None:
    source = tmp_path / "broken_power.py"
    source.write_text(
        textwrap.dedent(
            """
            class BrokenPower:
                def __init__(self, host, **options):
                    self.host = host

                def hardreset(self):
                    raise RuntimeError("the PDU said no")
            """
        )
    )
    spec = importlib.util.spec_from_file_location("broken_power", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    host = host_with(None)
    power = Power(host, "broken", module.BrokenPower(host))
    with pytest.raises(PowerError) as err:
        power.hardreset()
    assert str(err.value) == (
        f"lab1: power plugin 'broken' ({source}) failed to hardreset: RuntimeError: the PDU said no"
    )


@pytest.fixture
def fake_ipmitool(tmp_path: Path) -> Path:
    """An `ipmitool` that records its arguments and IPMI_PASSWORD; fails for BMC 10.9.9.66."""
    tool = tmp_path / "ipmitool"
    tool.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            echo "args: $*" >> {tmp_path}/ipmi.log
            echo "password: $IPMI_PASSWORD" >> {tmp_path}/ipmi.log
            case "$*" in *10.9.9.66*)
                echo "Error: Unable to establish IPMI v2 / RMCP+ session" >&2; exit 1;;
            esac
            echo "Chassis Power Control: Reset"
            """
        )
    )
    tool.chmod(0o755)
    return tool


def test_ipmi_plugin_keeps_the_password_off_the_command_line(fake_ipmitool: Path) -> None:
    host = host_with(
        {
            "type": "ipmi",
            "address": "10.9.9.5",
            "user": "admin",
            "password": "s3cret",
            "ipmitool": str(fake_ipmitool),
        }
    )
    host.power.hardreset()
    host.power.power_cycle()
    log = (fake_ipmitool.parent / "ipmi.log").read_text().splitlines()
    assert log == [
        "args: -I lanplus -H 10.9.9.5 -p 623 -U admin -E chassis power reset",
        "password: s3cret",
        "args: -I lanplus -H 10.9.9.5 -p 623 -U admin -E chassis power cycle",
        "password: s3cret",
    ]


def test_ipmi_failure_is_one_line_with_the_bmc_answer(fake_ipmitool: Path) -> None:
    host = host_with({"type": "ipmi", "address": "10.9.9.66", "ipmitool": str(fake_ipmitool)})
    with pytest.raises(PowerError) as err:
        host.power.power_off()
    assert str(err.value) == (
        "lab1: ipmi power off via BMC 10.9.9.66 failed (ipmitool exit status 1): "
        "Error: Unable to establish IPMI v2 / RMCP+ session"
    )
    with pytest.raises(PowerError, match="lab1: ipmi power control needs the BMC's address"):
        host_with({"type": "ipmi"}).power  # noqa: B018


def test_inventory_chooses_the_power_plugin(tmp_path: Path) -> None:
    from mhtest.hosts.inventory import make_host, resolve_hosts

    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(
        textwrap.dedent(
            f"""
            all:
              hosts:
                lab2:
                  ansible_host: 127.0.0.9
                  power: {{type: command, hardreset: "touch {tmp_path}/lab2-reset"}}
            """
        )
    )
    (config,) = resolve_hosts("lab2", inventory_path=str(inventory))
    host = make_host(config)
    try:
        assert host.power.kind == "command"
        host.power.hardreset()
        assert (tmp_path / "lab2-reset").exists()
    finally:
        host.close()
