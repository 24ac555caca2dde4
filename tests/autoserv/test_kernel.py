"""Kernel packages: DEBKernel and RPMKernel read real packages (built here with dpkg-deb and
rpmbuild, and Debian's own -cloud-amd64 kernel), refuse what is not a kernel, extract on a
real sshd host; and, on a real Debian guest, the seed's kernel control file (install, reboot
into it, back with set_default) and "the QEMU way" (extract, then QEMU's -kernel)."""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from mhtest.autoserv.bootloader import BootloaderError
from mhtest.autoserv.deb_kernel import DEBKernel
from mhtest.autoserv.kernel import KernelError
from mhtest.autoserv.rpm_kernel import RPMKernel
from mhtest.hosts.kvm_guest import KVMGuest

BOOT = 600
needs_dpkg_deb = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
needs_rpmbuild = pytest.mark.skipif(
    shutil.which("rpmbuild") is None, reason="needs rpmbuild (apt-get install rpm)"
)


def make_deb(
    where: Path,
    name: str,
    files: dict[str, bytes],
    md5sums: bool = True,
    compress: str = "xz",
    depends: str = "",
) -> Path:
    """A real .deb made by dpkg-deb."""
    root = where / f"{name}-root"
    (root / "DEBIAN").mkdir(parents=True)
    control = (
        f"Package: {name}\nVersion: 1.2-3\nArchitecture: amd64\n"
        "Maintainer: mhtest <mhtest@example.org>\nDescription: a test package\n"
    )
    if depends:
        control += f"Depends: {depends}\n"
    (root / "DEBIAN" / "control").write_text(control)
    sums = []
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        sums.append(f"{hashlib.md5(data).hexdigest()}  {rel}\n")
    if md5sums:
        (root / "DEBIAN" / "md5sums").write_text("".join(sums))
    out = where / f"{name}_1.2-3_amd64.deb"
    subprocess.run(
        ["dpkg-deb", f"-Z{compress}", "--root-owner-group", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


KERNEL_FILES = {
    "boot/vmlinuz-6.9.0-7-test-amd64": b"not really a kernel",
    "boot/config-6.9.0-7-test-amd64": b"CONFIG_X=y\n",
    "lib/modules/6.9.0-7-test-amd64/kernel/fs/x.ko": b"",
}


@needs_dpkg_deb
@pytest.mark.parametrize("md5sums,compress", [(True, "xz"), (False, "gzip"), (True, "zstd")])
def test_deb_kernel_names_from_the_package(tmp_path: Path, md5sums: bool, compress: str) -> None:
    if compress == "zstd" and shutil.which("zstd") is None:
        pytest.skip("needs zstd")
    deb = make_deb(tmp_path, "linux-image-6.9.0-7-test-amd64", KERNEL_FILES, md5sums, compress)
    kernel = DEBKernel()
    kernel.get(str(deb))
    assert kernel.get_version() == "6.9.0-7-test-amd64"
    assert kernel.get_image_name() == "/boot/vmlinuz-6.9.0-7-test-amd64"
    assert kernel.get_initrd_name() == "/boot/initrd.img-6.9.0-7-test-amd64"
    assert (kernel.info.name, kernel.info.version, kernel.info.arch) == (
        "linux-image-6.9.0-7-test-amd64",
        "1.2-3",
        "amd64",
    )


@needs_dpkg_deb
def test_what_is_not_a_kernel_package_is_one_line_naming_the_file(tmp_path: Path) -> None:
    hello = make_deb(tmp_path, "hello", {"usr/bin/hello": b"#!/bin/sh\n"})
    meta = make_deb(tmp_path, "linux-image-amd64", {}, depends="linux-image-6.9.0-7-amd64")
    text = tmp_path / "notes.deb"
    text.write_text("just text\n")
    cases = {
        hello: "not a kernel package: hello 1.2-3 installs no /boot/vmlinuz-*",
        meta: "a metapackage: give the one it depends on (linux-image-6.9.0-7-amd64)",
        text: "not a Debian package (not an ar archive)",
    }
    for path, words in cases.items():
        with pytest.raises(KernelError) as err:
            DEBKernel().get(str(path))
        assert str(err.value).startswith(f"{path}: ") and words in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(KernelError, match="call get"):
        DEBKernel().get_version()


@needs_dpkg_deb
def test_extract_unpacks_on_the_host_without_installing(tmp_path: Path, ssh_host) -> None:
    deb = make_deb(tmp_path, "linux-image-6.9.0-7-test-amd64", KERNEL_FILES)
    kernel = DEBKernel()
    kernel.get(str(deb))
    directory = kernel.extract(ssh_host)
    image = directory + kernel.get_image_name()
    assert ssh_host.run("cat", args=[image]).stdout == "not really a kernel"
    assert not ssh_host.run("test -e /boot/vmlinuz-6.9.0-7-test-amd64", ignore_status=True).ok


def make_rpm(where: Path, name: str, files: dict[str, str]) -> Path:
    """A real .rpm made by rpmbuild."""
    where.mkdir(parents=True, exist_ok=True)
    top = where / "rpmbuild"
    install = "\n".join(
        f"mkdir -p %{{buildroot}}{shlex.quote(str(Path(p).parent))} && "
        f"printf %s {shlex.quote(data)} > %{{buildroot}}{shlex.quote(p)}"
        for p, data in files.items()
    )
    spec = where / f"{name}.spec"
    spec.write_text(
        textwrap.dedent(
            """\
            Name: {name}
            Version: 6.9.0
            Release: 7.test
            Summary: a test package
            License: GPL
            BuildArch: x86_64
            %description
            a test package
            %install
            {install}
            %files
            {files}
            """
        ).format(name=name, install=install, files="\n".join(files))
    )
    subprocess.run(
        ["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", "--nodeps", str(spec)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (rpm,) = (top / "RPMS").rglob("*.rpm")
    return rpm


@needs_rpmbuild
def test_rpm_kernel_read_and_extracted(tmp_path: Path, ssh_host) -> None:
    release = "6.9.0-7.test.x86_64"
    rpm = make_rpm(
        tmp_path,
        "kernel-core",
        {f"/lib/modules/{release}/vmlinuz": "an rpm kernel", f"/lib/modules/{release}/x": "y"},
    )
    kernel = RPMKernel()
    kernel.get(str(rpm))
    assert kernel.get_version() == release
    assert kernel.get_image_name() == f"/boot/vmlinuz-{release}"
    assert kernel.get_initrd_name() == f"/boot/initramfs-{release}.img"
    assert (kernel.info.name, kernel.info.version, kernel.info.arch) == (
        "kernel-core",
        "6.9.0-7.test",
        "x86_64",
    )
    directory = kernel.extract(ssh_host)
    assert ssh_host.run("cat", args=[f"{directory}/lib/modules/{release}/vmlinuz"]).stdout == (
        "an rpm kernel"
    )
    other = make_rpm(tmp_path / "other", "hello", {"/usr/bin/hello": "#!/bin/sh"})
    with pytest.raises(KernelError) as err:
        RPMKernel().get(str(other))
    assert str(err.value) == (
        f"{other}: not a kernel package: hello 6.9.0-7.test installs no /boot/vmlinuz-* "
        "(nor /lib/modules/*/vmlinuz)"
    )
    with pytest.raises(KernelError, match="not an RPM package"):
        RPMKernel().get(str(__file__))


# -- on a real Debian guest ----------------------------------------------------------------


def boot_guest(kvm, image, options: list[str] | None = None) -> KVMGuest:
    guest = KVMGuest(
        kvm, options or image.qemu_options(), key_file=image.key_file, host_key=image.host_key
    )
    if not guest.wait_up(BOOT):
        guest.close()
        pytest.fail(f"guest did not come up: {guest.qemu.console_tail()}")
    return guest


@pytest.mark.slow
@pytest.mark.timeout(5 * BOOT)
def test_kernel_control_file_install_reboot_and_back(kvm_host, debian_image) -> None:
    rh = boot_guest(kvm_host, debian_image)
    try:
        assert rh.run("uname -r").stdout.strip() == debian_image.kernel_release
        original = rh.bootloader.get_default_entry()
        assert original.kernel == f"/boot/vmlinuz-{debian_image.kernel_release}"

        kernel = DEBKernel()
        kernel.get(debian_image.kernels["cloud-amd64"][0])
        kernel.install(rh)
        assert rh.bootloader.get_default_title() == "mhtest"

        rh.reboot(timeout=BOOT)
        assert rh.run("uname -r").stdout.strip() == kernel.get_version()
        assert kernel.get_version().endswith("-cloud-amd64")

        rh.bootloader.set_default(original.title)
        assert rh.bootloader.get_default_title() == original.title
        rh.reboot(timeout=BOOT)
        assert rh.run("uname -r").stdout.strip() == debian_image.kernel_release

        # The next boot only, and taking mhtest's entry away again.
        rh.bootloader.boot_once("mhtest")
        assert "next_entry=mhtest-mhtest" in rh.run("grub-editenv - list").stdout
        rh.bootloader.remove_kernel("mhtest")
        assert "mhtest" not in rh.bootloader.get_titles()
        with pytest.raises(BootloaderError) as err:
            rh.bootloader.remove_kernel(original.title)
        assert "was made by grub-mkconfig" in str(err.value) and "\n" not in str(err.value)
    finally:
        rh.close()


@pytest.mark.slow
@pytest.mark.timeout(2 * BOOT)
def test_the_qemu_way_extract_then_boot_with_kernel_option(kvm_host, debian_image) -> None:
    kernel = DEBKernel()
    kernel.get(debian_image.kernels["cloud-amd64"][0])
    kernel_dir = kernel.extract(kvm_host.host)
    # The .deb holds no initrd: send one made for this kernel, as the seed suggests.
    initrd = f"{kernel_dir}/initrd.img"
    kvm_host.host.send_file(debian_image.kernels["cloud-amd64"][1], initrd)
    image = f"{kernel_dir}/{kernel.get_image_name()[1:]}"
    append = "root=LABEL=mhtest-root ro console=ttyS0 net.ifnames=0 quiet"
    options = [
        *debian_image.qemu_options(),
        *("-kernel", image, "-initrd", initrd, "-append", append),
    ]
    g1 = boot_guest(kvm_host, debian_image, options)
    try:
        assert g1.run("uname -r").stdout.strip() == kernel.get_version()
        assert g1.run("cat /proc/cmdline").stdout.strip() == append  # no GRUB in the way
        # Not installed: the guest's disk does not have it.
        assert not g1.run(f"test -e {kernel.get_image_name()}", ignore_status=True).ok
    finally:
        g1.close()
