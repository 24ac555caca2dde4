"""KVM.get()/install() with a QEMU of one's own: a build directory or a tarball sent to a real
sshd host, built there with `build=True`; bad addresses and a missing binary are one line.

No QEMU source can be had here to compile (hours, and no network but the package mirrors), so
the "source tree" is a tiny one whose configure and make put a wrapper of the packaged QEMU
where a real build leaves its binary; install() then runs it for real (`--version`).
"""

from __future__ import annotations

import shutil
import tarfile
import textwrap
from pathlib import Path

import pytest

from mhtest.autoserv.kvm import KVM, KVMError

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64 (QEMU)"
)

WRAPPER = f'#!/bin/sh\nexec {shutil.which("qemu-system-x86_64")} "$@"\n'


def source_tree(root: Path) -> Path:
    """A QEMU-like source tree: ./configure, then make leaves build/qemu-system-x86_64."""
    root.mkdir(parents=True)
    (root / "configure").write_text('#!/bin/sh\necho "$@" > configured\n')
    (root / "configure").chmod(0o755)
    (root / "wrapper.sh").write_text(WRAPPER)
    (root / "Makefile").write_text(
        textwrap.dedent(
            """\
            all:
            \ttest -f configured
            \tmkdir -p build
            \tinstall -m 755 wrapper.sh build/qemu-system-x86_64
            """
        )
    )
    return root


def test_a_built_directory_is_used_as_it_is(tmp_path: Path, ssh_host) -> None:
    tree = source_tree(tmp_path / "qemu-built")
    (tree / "build").mkdir()
    (tree / "build" / "qemu-system-x86_64").write_text(WRAPPER)
    (tree / "build" / "qemu-system-x86_64").chmod(0o755)
    kvm = KVM(ssh_host)
    kvm.get(str(tree))
    kvm.install(accel="tcg")
    try:
        assert kvm.qemu_binary.endswith("/qemu-built/build/qemu-system-x86_64")
        assert kvm.qemu_binary != str(tree / "build" / "qemu-system-x86_64")  # a copy there
        assert kvm.version.startswith("QEMU emulator version")
    finally:
        kvm.close()


def test_a_tarball_is_unpacked_and_built_on_the_host(tmp_path: Path, ssh_host) -> None:
    tree = source_tree(tmp_path / "src" / "qemu-9.9")
    tarball = tmp_path / "qemu-9.9.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tree, arcname="qemu-9.9")
    kvm = KVM(ssh_host)
    kvm.get(str(tarball))
    with pytest.raises(KVMError) as err:
        kvm.install(accel="tcg")  # not built: no binary where a build leaves it
    assert str(ssh_host) in str(err.value) and "install(build=True)" in str(err.value)
    assert "\n" not in str(err.value)
    kvm.install(build=True, accel="tcg")
    try:
        assert kvm.qemu_binary.endswith("/qemu-9.9/build/qemu-system-x86_64")
        configured = ssh_host.run("cat", args=[kvm.qemu_binary.rsplit("/", 2)[0] + "/configured"])
        assert configured.stdout.strip() == "--target-list=x86_64-softmmu"
        assert kvm.version.startswith("QEMU emulator version")
    finally:
        kvm.close()


def test_addresses_without_mac_or_ip_are_refused(ssh_host) -> None:
    with pytest.raises(KVMError, match="each address needs 'mac' and 'ip'"):
        KVM(ssh_host).install(addresses=[{"ip": "127.0.0.1"}], accel="tcg")
