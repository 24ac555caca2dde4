"""RPMKernel: a kernel packaged as an .rpm (Autoserv's rpm_kernel.RPMKernel).

The package is read here without rpm: its lead, the signature header and the main header
give the name, version, architecture, the file list (where the kernel goes) and how the
payload is compressed. Installing runs `rpm -i --force` on the host, then makes the initrd
(dracut, else mkinitrd) when the package's scripts did not; extract() unpacks the payload
there with tail, the decompressor and cpio, so the host needs no rpm2cpio.
"""

from __future__ import annotations

import os
import shlex
import struct

from mhtest.autoserv.kernel import BinaryKernel, KernelError, PackageInfo, find_kernel_image, run_on

LEAD_MAGIC = b"\xed\xab\xee\xdb"
HEADER_MAGIC = b"\x8e\xad\xe8\x01"
LEAD_SIZE = 96
TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_ARCH = 1000, 1001, 1002, 1022
TAG_OLDFILENAMES, TAG_DIRINDEXES, TAG_BASENAMES, TAG_DIRNAMES = 1027, 1116, 1117, 1118
TAG_PAYLOADCOMPRESSOR = 1125
T_INT32, T_STRING, T_STRING_ARRAY, T_I18NSTRING = 4, 6, 8, 9
DECOMPRESSORS = {"gzip": "gzip -dc", "xz": "xz -dc", "lzma": "xz -dc", "zstd": "zstd -dc",
                 "bzip2": "bzip2 -dc"}  # fmt: skip


def _read_header(data: bytes, offset: int, path: str) -> tuple[dict[int, object], int]:
    """One RPM header at `offset`: {tag: value}, and the offset just after it."""
    if data[offset : offset + 4] != HEADER_MAGIC:
        raise KernelError(f"{path}: not an RPM package (no header at byte {offset})")
    count, size = struct.unpack(">II", data[offset + 8 : offset + 16])
    index_start = offset + 16
    store = index_start + 16 * count
    end = store + size
    if end > len(data):
        raise KernelError(f"{path}: a damaged RPM package (its header runs past the file)")
    tags: dict[int, object] = {}
    for i in range(count):
        tag, kind, where, n = struct.unpack(
            ">IIII", data[index_start + 16 * i : index_start + 16 * i + 16]
        )
        start = store + where
        if kind == T_INT32:
            tags[tag] = list(struct.unpack(f">{n}I", data[start : start + 4 * n]))
        elif kind in (T_STRING, T_STRING_ARRAY, T_I18NSTRING):
            values, pos = [], start
            for _ in range(n if kind != T_STRING else 1):
                stop = data.index(b"\0", pos)
                values.append(data[pos:stop].decode("utf-8", "replace"))
                pos = stop + 1
            tags[tag] = values[0] if kind == T_STRING else values
    return tags, end


def read_rpm(path: str) -> tuple[dict[int, object], int]:
    """The main header's tags of an .rpm, and where its payload starts."""
    try:
        with open(path, "rb") as rpm:
            data = rpm.read(16 << 20)  # headers come first; a kernel's fit easily
    except OSError as exc:
        raise KernelError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not data.startswith(LEAD_MAGIC):
        raise KernelError(f"{path}: not an RPM package (no RPM lead)")
    _, after_signature = _read_header(data, LEAD_SIZE, path)
    after_signature += -after_signature % 8  # the main header is 8-byte aligned
    return _read_header(data, after_signature, path)


def file_list(tags: dict[int, object]) -> list[str]:
    if TAG_BASENAMES in tags:
        dirs = tags.get(TAG_DIRNAMES, [])
        return [
            f"{dirs[i]}{name}"  # type: ignore[index]
            for name, i in zip(tags[TAG_BASENAMES], tags.get(TAG_DIRINDEXES, []))  # type: ignore[arg-type]
        ]
    return list(tags.get(TAG_OLDFILENAMES, []))  # type: ignore[arg-type]


class RPMKernel(BinaryKernel):
    """An RPM kernel package (kernel-core-RELEASE.rpm, kernel-RELEASE.rpm)."""

    kind = "RPM kernel"

    def read_package(self, path: str) -> PackageInfo:
        tags, payload = read_rpm(path)
        name = str(tags.get(TAG_NAME, ""))
        version = f"{tags.get(TAG_VERSION, '')}-{tags.get(TAG_RELEASE, '')}"
        files = file_list(tags)
        found = find_kernel_image(files)
        if found is None:
            raise KernelError(
                f"{path}: not a kernel package: {name} {version} installs no /boot/vmlinuz-* "
                "(nor /lib/modules/*/vmlinuz)"
            )
        image, release = found
        compressor = str(tags.get(TAG_PAYLOADCOMPRESSOR, "gzip"))
        extra = {"payload_offset": payload, "compressor": compressor}
        arch = str(tags.get(TAG_ARCH, ""))
        return PackageInfo(path, name, version, arch, release, image, files, extra)

    def get_initrd_name(self) -> str:
        return f"/boot/initramfs-{self._info().release}.img"

    def install_package(self, host, path: str) -> None:
        run_on(host, "rpm -i --force", f"rpm -i {os.path.basename(path)}", args=[path])
        info = self._info()
        if info.image != self.get_image_name():
            # Fedora's kernel-core keeps it in /lib/modules; kernel-install copies it to /boot
            run_on(host, f"test -f {shlex.quote(self.get_image_name())} || cp", "copying",
                   args=[info.image, self.get_image_name()])  # fmt: skip

    def make_initrd(self, host) -> None:
        release = self._info().release
        script = (
            'if command -v dracut >/dev/null; then dracut -f "$2" "$1"; else mkinitrd "$2" "$1"; fi'
        )
        run_on(host, "sh -c " + shlex.quote(script) + " sh", f"making the initrd of {release}",
               args=[release, self.get_initrd_name()])  # fmt: skip

    def extract_package(self, host, path: str, directory: str) -> None:
        info = self._info()
        compressor = info.extra["compressor"]
        if compressor not in DECOMPRESSORS:
            raise KernelError(f"{info.path}: payload compressed with {compressor}: unknown here")
        offset = int(info.extra["payload_offset"]) + 1
        command = (
            f"cd {shlex.quote(directory)} && tail -c +{offset} {shlex.quote(path)} | "
            f"{DECOMPRESSORS[compressor]} | cpio -idm --quiet --no-absolute-filenames"
        )
        run_on(host, command, f"unpacking {os.path.basename(path)}")
