"""DEBKernel: a kernel packaged as a Debian .deb (Autoserv's deb_kernel.DEBKernel).

The package is read here without dpkg: a .deb is an ar archive whose control.tar holds the
control fields and the md5sums of every file, which say where the kernel goes (the data.tar
is listed instead when there are no md5sums). Installing
runs `dpkg -i` on the host (whose kernel hooks make the initrd and update GRUB on Debian);
extract() runs `dpkg-deb -x` there.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import tarfile

from mhtest.autoserv.kernel import BinaryKernel, KernelError, PackageInfo, find_kernel_image, run_on

AR_MAGIC = b"!<arch>\n"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _decompress_zstd(data: bytes, path: str) -> bytes:
    if shutil.which("zstd") is None:
        raise KernelError(f"{path}: its control.tar is zstd-compressed: install zstd here")
    proc = subprocess.run(["zstd", "-dc"], input=data, capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise KernelError(f"{path}: zstd could not read its control.tar")
    return proc.stdout


def _ar_members(path: str) -> dict[str, bytes]:
    """The control.tar* and data.tar* members of a .deb (an ar archive), by name."""
    members: dict[str, bytes] = {}
    try:
        with open(path, "rb") as deb:
            if deb.read(8) != AR_MAGIC:
                raise KernelError(f"{path}: not a Debian package (not an ar archive)")
            while True:
                header = deb.read(60)
                if len(header) < 60:
                    break
                name = header[:16].decode("ascii", "replace").strip().rstrip("/")
                size = int(header[48:58].decode("ascii", "replace").strip() or 0)
                if name.startswith(("control.tar", "data.tar")):
                    members[name.split(".")[0]] = deb.read(size)
                    deb.seek(size & 1, os.SEEK_CUR)
                else:
                    deb.seek(size + (size & 1), os.SEEK_CUR)
    except OSError as exc:
        raise KernelError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError:
        raise KernelError(f"{path}: not a Debian package (a damaged ar header)") from None
    if "control" not in members:
        raise KernelError(f"{path}: not a Debian package (no control.tar in it)")
    return members


def _open_tar(data: bytes, path: str) -> tarfile.TarFile:
    if data.startswith(ZSTD_MAGIC):
        data = _decompress_zstd(data, path)
    try:
        return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise KernelError(f"{path}: a damaged tar archive inside: {exc}") from None


def read_deb(path: str) -> tuple[dict[str, bytes], list[str]]:
    """A .deb's control files ({"control": ..., "md5sums": ...}) and the files it installs."""
    members = _ar_members(path)
    control: dict[str, bytes] = {}
    with _open_tar(members["control"], path) as tar:
        for member in tar.getmembers():
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None:
                control[os.path.basename(member.name)] = extracted.read()
    md5sums = control.get("md5sums", b"").decode("utf-8", "replace").splitlines()
    files = [line.split(None, 1)[1] for line in md5sums if len(line.split(None, 1)) == 2]
    if not files and "data" in members:  # no md5sums (hand-made packages): list the data
        with _open_tar(members["data"], path) as tar:
            files = [m.name.lstrip("./") for m in tar.getmembers() if not m.isdir()]
    return control, files


def parse_control(text: str) -> dict[str, str]:
    """Debian control fields (continuation lines joined)."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    return fields


class DEBKernel(BinaryKernel):
    """A Debian kernel image package (linux-image-RELEASE_VERSION_ARCH.deb)."""

    kind = "Debian kernel"

    def read_package(self, path: str) -> PackageInfo:
        control_files, files = read_deb(path)
        fields = parse_control(control_files.get("control", b"").decode("utf-8", "replace"))
        name = fields.get("Package", "")
        if not name:
            raise KernelError(f"{path}: not a Debian package (no Package field)")
        found = find_kernel_image(files)
        if found is None:
            hint = ""
            if name.startswith("linux-image-") and fields.get("Depends"):
                hint = f"; a metapackage: give the one it depends on ({fields['Depends']})"
            raise KernelError(
                f"{path}: not a kernel package: {name} {fields.get('Version', '?')} installs no "
                f"/boot/vmlinuz-*{hint}"
            )
        image, release = found
        return PackageInfo(path, name, fields.get("Version", ""), fields.get("Architecture", ""),
                       release, image, files, {"control": fields})  # fmt: skip

    def get_initrd_name(self) -> str:
        return f"/boot/initrd.img-{self._info().release}"

    def install_package(self, host, path: str) -> None:
        run_on(host, "dpkg -i", f"dpkg -i {os.path.basename(path)}", args=[path],
               env={"DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip

    def make_initrd(self, host) -> None:
        release = self._info().release
        script = (
            'if command -v update-initramfs >/dev/null; then update-initramfs -c -k "$1"; '
            'else mkinitramfs -o "$2" "$1"; fi'
        )
        run_on(host, "sh -c " + shlex.quote(script) + " sh", f"making the initrd of {release}",
               args=[release, self.get_initrd_name()])  # fmt: skip

    def extract_package(self, host, path: str, directory: str) -> None:
        run_on(host, "dpkg-deb -x", f"dpkg-deb -x {os.path.basename(path)}",
               args=[path, directory])  # fmt: skip
