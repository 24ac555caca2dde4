"""The mirror: new releases in a watched directory become queued control files, and a mail."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mhtest.queue.mirror import Mirror, MirrorConfig, MirrorError, load_clients, load_configs

pytestmark = pytest.mark.timeout(60)

DEB = "linux-image-6.1.0-18-cloud-amd64_6.1.76-1_amd64.deb"


@pytest.fixture
def lab(tmp_path: Path) -> dict[str, Path]:
    """A mirror directory, two queues, control files and the mapping naming them."""
    mirror, queues, controls = tmp_path / "mirror", tmp_path / "queue", tmp_path / "control_files"
    for path in (mirror, queues / "x86_64", queues / "lonehost", controls):
        path.mkdir(parents=True)
    (controls / "basic-tests").write_text('job.run_test("sleeptest")\n')
    (controls / "net.srv").write_text("print(kernel, machines)\n")
    clients = tmp_path / "mirror_clients"
    clients.write_text(
        "# queue   control files\n"
        f"x86_64    {controls}/basic-tests {controls}/net.srv\n"
        f"lonehost  {controls}/basic-tests\n"
        f"nowhere   {controls}/basic-tests   # no such queue\n"
    )
    return {"mirror": mirror, "queues": queues, "controls": controls, "clients": clients}


def running(mirror: Mirror) -> tuple[threading.Event, threading.Thread, list[str]]:
    said: list[str] = []
    mirror.say = said.append
    stop = threading.Event()
    thread = threading.Thread(target=mirror.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread, said


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {predicate}")


def test_a_release_dropped_in_is_queued_on_each_queue_and_mailed(lab, mailbox) -> None:
    (lab["mirror"] / "linux-6.6.tar.xz").write_text("there before")
    config = MirrorConfig(
        mirror=lab["mirror"],
        queues=lab["queues"],
        clients=lab["clients"],
        email=["lab@example.org", "me@example.org"],
        smtp=f"127.0.0.1:{mailbox.port}",
        sender="mirror@example.org",
    )
    mirror = Mirror(config)
    stop, thread, said = running(mirror)
    try:
        wait_for(lambda: any("watching" in line for line in said))
        assert "mirror: 1 file(s) already in" in said[0]  # recorded, not queued
        (lab["mirror"] / "debs").mkdir()
        (lab["mirror"] / "debs" / DEB).write_bytes(b"!<arch>\n")
        (lab["mirror"] / "README").write_text("not a release")
        wait_for(lambda: mailbox.messages)
    finally:
        stop.set()
        thread.join(10)
    x86 = sorted(p.name for p in (lab["queues"] / "x86_64").iterdir())
    assert x86 == ["6.1.0-18-cloud-amd64-basic-tests.srv", "6.1.0-18-cloud-amd64-net.srv"]
    assert [p.name for p in (lab["queues"] / "lonehost").iterdir()] == [
        "6.1.0-18-cloud-amd64-basic-tests.srv"
    ]
    wrapped = (lab["queues"] / "x86_64" / "6.1.0-18-cloud-amd64-basic-tests.srv").read_text()
    assert f"kernel_path = '{lab['mirror'] / 'debs' / DEB}'" in wrapped
    assert (
        "package = deb_kernel.DEBKernel()" in wrapped
        and f"control = '{lab['controls']}/basic-tests'" in wrapped
    )
    srv = (lab["queues"] / "x86_64" / "6.1.0-18-cloud-amd64-net.srv").read_text()
    assert srv.startswith("# Queued by `mhtest queue mirror` on queue x86_64 for kernel 6.1.0-18")
    assert "kernel = '6.1.0-18-cloud-amd64'\n" in srv and srv.endswith(
        "\nprint(kernel, machines)\n"
    )
    assert any(
        line.endswith(
            ": no queue "
            + str(lab["queues"] / "nowhere")
            + ": 6.1.0-18-cloud-amd64 not queued there"
        )
        for line in said
    )
    [message] = mailbox.messages
    assert message["Subject"] == "mhtest: 1 new kernel release(s)"
    assert message["From"] == "mirror@example.org"
    assert mailbox.envelopes[0].rcpt_tos == ["lab@example.org", "me@example.org"]
    body = message.get_payload().replace("\r\n", "\n")  # SMTP's line ends
    assert f"Testing new kernel releases:\n  6.1.0-18-cloud-amd64 ({DEB})\n" in body
    assert "  x86_64/6.1.0-18-cloud-amd64-net.srv\n" in body
    # Seen: another start queues nothing again.
    assert Mirror(config).run(threading.Event(), once=True) == []


def test_a_broken_mapping_holds_the_releases_until_it_is_fixed(lab) -> None:
    clients = lab["clients"]
    good = clients.read_text()
    clients.write_text("x86_64\n")
    config = MirrorConfig(mirror=lab["mirror"], queues=lab["queues"], clients=clients)
    Mirror(config).run(threading.Event(), once=True)  # the first start: nothing there
    (lab["mirror"] / "linux-6.7.tar.xz").write_text("tarball")
    said: list[str] = []
    assert Mirror(config, said.append).run(threading.Event(), once=True) == []
    assert said == [
        f"mirror: {clients}:1: a queue and at least one control file, not 'x86_64': "
        "releases wait until it is fixed"
    ]
    clients.write_text(good)
    queued = Mirror(config).run(threading.Event(), once=True)
    assert sorted(p.name for p in queued) == [
        "6.7-basic-tests.srv",
        "6.7-basic-tests.srv",
        "6.7-net.srv",
    ]


def test_mapping_and_config_files(tmp_path: Path) -> None:
    path = tmp_path / "clients"
    path.write_text("q1 /a/b /c.srv\n\n# c\nq2 ~/x\n")
    mapping = load_clients(path)
    assert [(q, [str(c) for c in cs]) for q, cs, _ in mapping][0] == ("q1", ["/a/b", "/c.srv"])
    assert mapping[1][1][0].is_absolute() and mapping[1][2] == f"{path}:4"
    path.write_text("q1 relative/control\n")
    with pytest.raises(
        MirrorError, match=r":1: control files are absolute paths, not 'relative/control'"
    ):
        load_clients(path)
    with pytest.raises(MirrorError, match="cannot read"):
        load_clients(tmp_path / "none")
    configs = tmp_path / "configs"
    configs.write_text("h1 /boot/config-lab\nh1 /boot/other\nx86_64 /boot/q\n")
    assert load_configs(configs) == {"h1": "/boot/config-lab", "x86_64": "/boot/q"}


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_an_rsync_source_fills_the_mirror(lab, tmp_path: Path) -> None:
    source = tmp_path / "upstream"
    source.mkdir()
    config = MirrorConfig(
        mirror=lab["mirror"], queues=lab["queues"], clients=lab["clients"], rsync=f"{source}/"
    )
    assert Mirror(config).run(threading.Event(), once=True) == []
    (source / "v6.x").mkdir()
    (source / "v6.x" / "linux-6.7.tar.xz").write_text("tarball")
    (source / "v6.x" / "patch-6.8-rc1.xz").write_text("patch")
    queued = Mirror(config).run(threading.Event(), once=True)
    assert sorted(p.name for p in queued if p.parent.name == "x86_64") == [
        "6.7-basic-tests.srv",
        "6.7-net.srv",
        "6.8-rc1-basic-tests.srv",
        "6.8-rc1-net.srv",
    ]
    text = (lab["queues"] / "x86_64" / "6.8-rc1-basic-tests.srv").read_text()
    assert f"patches = ['{lab['mirror']}/v6.x/patch-6.8-rc1.xz']" in text
    assert subprocess.run(["rsync", "--version"], capture_output=True).returncode == 0
