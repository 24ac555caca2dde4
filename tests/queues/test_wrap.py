"""Kernel releases and the control files the mirror writes for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mhtest.queue.wrap import (
    DEFAULT_CONFIG,
    ReleaseError,
    client_wrapper,
    patch_base,
    queued_name,
    release_of,
    server_control,
    uname_prefix,
)

pytestmark = pytest.mark.timeout(60)

MIRROR = Path("/srv/mirror")
TARBALLS = {v: MIRROR / f"linux-{v}.tar.xz" for v in ("6.6", "6.7", "6.7.2")}


@pytest.mark.parametrize(
    ("name", "kind", "version", "uname"),
    [
        (
            "linux-image-6.1.0-18-cloud-amd64_6.1.76-1_amd64.deb",
            "deb",
            "6.1.0-18-cloud-amd64",
            "6.1.0-18-cloud-amd64",
        ),
        (
            "kernel-core-6.5.6-300.fc39.x86_64.rpm",
            "rpm",
            "6.5.6-300.fc39.x86_64",
            "6.5.6-300.fc39.x86_64",
        ),
        (
            "kernel-6.5.6-300.fc39.x86_64.rpm",
            "rpm",
            "6.5.6-300.fc39.x86_64",
            "6.5.6-300.fc39.x86_64",
        ),
        ("linux-6.7.tar.xz", "source", "6.7", "6.7.0"),
        ("linux-6.7.2.tar.gz", "source", "6.7.2", "6.7.2"),
        ("patch-6.8-rc1.xz", "source", "6.8-rc1", "6.8.0-rc1"),
        ("patch-6.7.3.bz2", "source", "6.7.3", "6.7.3"),
    ],
)
def test_releases(name: str, kind: str, version: str, uname: str) -> None:
    release = release_of(MIRROR / name, TARBALLS)
    assert release is not None
    assert (release.kind, release.version, uname_prefix(release)) == (kind, version, uname)


@pytest.mark.parametrize(
    "name",
    [
        "linux-image-amd64_6.1.76-1_amd64.deb",
        "kernel-devel-6.5.6.rpm",
        "linux-6.7.tar.sign",
        "README",
        "sha256sums.asc",
    ],
)
def test_not_releases(name: str) -> None:
    assert release_of(MIRROR / name, TARBALLS) is None


def test_a_patch_applies_to_the_tarball_before_it() -> None:
    assert patch_base("6.8-rc1", TARBALLS) == "6.7"
    assert patch_base("6.8-rc3-git2", TARBALLS) == "6.7"
    assert patch_base("6.7.3", TARBALLS) == "6.7"
    assert patch_base("6.6-rc1", TARBALLS) is None
    release = release_of(MIRROR / "patch-6.8-rc1.xz", TARBALLS)
    assert release.path == MIRROR / "linux-6.7.tar.xz" and release.patches == [
        MIRROR / "patch-6.8-rc1.xz"
    ]
    with pytest.raises(ReleaseError, match=r"patch-5.2-rc1.gz: no tarball it applies to"):
        release_of(MIRROR / "patch-5.2-rc1.gz", TARBALLS)


class Calls:
    """Fakes for a server control file's names, each call written down in `log`."""

    def __init__(self, uname: str) -> None:
        self.log: list[tuple] = []
        self.uname = uname

    def namespace(self, machines: list[str]) -> dict:
        calls = self

        class Host:
            def __init__(self, name):
                self.name = name

            def reboot(self):
                calls.log.append(("reboot", self.name))

            def run(self, command):
                calls.log.append(("run", self.name, command))
                return type("Result", (), {"stdout": calls.uname + "\n"})()

        class DEBKernel:
            def get(self, path):
                calls.log.append(("get", path))

            def install(self, host):
                calls.log.append(("install", host.name))

        class Autotest:
            def __init__(self, host):
                self.host = host

            def run(self, control, results_dir, host):
                calls.log.append(("autotest.run", control, results_dir, host.name))

        class Job:
            def record(self, *args):
                calls.log.append(("record", *args))

            def parallel_simple(self, function, items):
                for item in items:
                    function(item)

        class TestError(Exception):
            pass

        return {
            "machines": machines,
            "hosts": type("Hosts", (), {"create_host": staticmethod(Host)}),
            "deb_kernel": type("DebKernel", (), {"DEBKernel": DEBKernel}),
            "autotest": type("AutotestModule", (), {"Autotest": Autotest}),
            "error": type("Error", (), {"TestError": TestError}),
            "job": Job(),
            "os": __import__("os"),
        }


def test_a_package_release_wraps_a_client_control_file(tmp_path: Path) -> None:
    control = tmp_path / "basic-tests"
    control.write_text('job.run_test("sleeptest")\n')
    release = release_of(MIRROR / "linux-image-6.1.0-18-cloud-amd64_6.1.76-1_amd64.deb", TARBALLS)
    text = client_wrapper(release, "x86_64", {}, control)
    calls = Calls("6.1.0-18-cloud-amd64")
    namespace = calls.namespace(["h1", "h2"])
    exec(compile(text, "wrapped.srv", "exec"), namespace)
    assert namespace["config"] == DEFAULT_CONFIG and namespace["patches"] == []
    deb = str(release.path)
    assert calls.log == [
        call
        for host in ("h1", "h2")  # (one after the other here: parallel_simple is a fake)
        for call in [
            ("get", deb),
            ("install", host),
            ("reboot", host),
            ("run", host, "uname -r"),
            ("record", "GOOD", host, "boot", "booted 6.1.0-18-cloud-amd64"),
            ("autotest.run", str(control), ".", host),
        ]
    ]
    assert queued_name(release, control) == "6.1.0-18-cloud-amd64-basic-tests.srv"
    # Another kernel booted: the control file is not run there.
    calls = Calls("6.1.0-17-cloud-amd64")
    with pytest.raises(Exception, match="h1 booted kernel 6.1.0-17-cloud-amd64, not 6.1.0-18"):
        exec(compile(text, "wrapped.srv", "exec"), calls.namespace(["h1"]))
    assert not [c for c in calls.log if c[0] == "autotest.run"]


def test_a_source_release_is_built_with_the_machines_config(tmp_path: Path) -> None:
    control = tmp_path / "basic-tests"
    control.write_text("job.run_test('sleeptest')\n")
    release = release_of(MIRROR / "patch-6.8-rc1.xz", TARBALLS)
    text = client_wrapper(
        release, "x86_64", {"h1": "/boot/config-lab", "x86_64": "/boot/q"}, control
    )
    compile(text, "wrapped", "exec")
    namespace: dict = {"os": __import__("os")}
    body = text.split("\n\n\ndef kernel_then_tests", 1)[0]
    exec(body, namespace)

    class Host:
        commands: list = []
        sent: list = []

        def get_tmp_dir(self):
            return "/tmp/build"

        def send_file(self, source, target):
            self.sent.append((source, target))

        def run(self, command, timeout=None):
            self.commands.append((command, timeout))

        def reboot(self):
            self.commands.append(("reboot", None))

    host = Host()
    namespace["boot_kernel"](host, "h1")
    assert host.sent == [
        ("/srv/mirror/linux-6.7.tar.xz", "/tmp/build/linux-6.7.tar.xz"),
        ("/srv/mirror/patch-6.8-rc1.xz", "/tmp/build/patch-6.8-rc1.xz"),
    ]
    command, timeout = host.commands[0]
    assert command.split(" && ") == [
        "cd /tmp/build",
        "tar xf linux-6.7.tar.xz",
        "cd linux-*/",
        "xzcat ../patch-6.8-rc1.xz | patch -p1 -s",
        'cp "/boot/config-lab" .config',
        "make olddefconfig",
        "make -j$(nproc)",
        "make modules_install",
        "make install",
    ]
    assert timeout >= 3600 and host.commands[1] == ("reboot", None)
    host.commands.clear()
    namespace["boot_kernel"](host, "h2")  # no line of its own: its queue's
    assert 'cp "/boot/q" .config' in host.commands[0][0]


def test_a_srv_gets_the_preamble(tmp_path: Path) -> None:
    srv = tmp_path / "net.srv"
    srv.write_text("print(kernel, config, patches, machines)\n")
    release = release_of(MIRROR / "linux-6.7.2.tar.gz", TARBALLS)
    text = server_control(release, "x86_64", {"x86_64": "/boot/cfg"}, srv)
    assert text.endswith("\nprint(kernel, config, patches, machines)\n")
    namespace: dict = {}
    exec(text.replace("print(kernel, config, patches, machines)", ""), namespace)
    assert (namespace["kernel"], namespace["config"], namespace["patches"]) == (
        "6.7.2",
        "/boot/cfg",
        [],
    )
    assert namespace["kernel_path"] == "/srv/mirror/linux-6.7.2.tar.gz"
    assert queued_name(release, srv) == "6.7.2-net.srv"
