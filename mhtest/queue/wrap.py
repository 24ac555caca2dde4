"""Kernel releases, and the control files the mirror queues for them.

A release is a file of the mirror directory:

- a kernel package: `linux-image-<uname -r>_<version>_<arch>.deb`, or
  `kernel[-core]-<uname -r>.rpm`;
- a source release: `linux-<version>.tar.{gz,bz2,xz}`, or a patch
  `patch-<version>.{gz,bz2,xz}` on the newest tarball of the mirror it applies to (an -rc
  patch on the release before, a stable one on its own X.Y).

For each queue its mapping names, each control file becomes one server control file:

- a `*.srv` gets Autotest's preamble (`kernel`, the version; `config`, the kernel config to
  build with; `patches`) and mhtest's `kernel_path` (the release file) and `configs`;
- a client control file is wrapped into a server control file that, on every machine of
  the queue at once, installs and boots the release first (a package through the kernel
  objects: `kernel = deb_kernel.DEBKernel(); kernel.get(path); kernel.install(host);
  host.reboot()`; a source release sent to the machine, built there with its config,
  installed), checks that `uname -r` is the release's, then runs the client control file
  there (`autotest.Autotest(host).run(path)`: its directory goes with it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

#: The kernel config a source release is built with, when the config file names none.
DEFAULT_CONFIG = "/boot/config-$(uname -r)"
#: How long building a kernel on a machine may take.
BUILD_TIMEOUT = 4 * 3600

_DEB = re.compile(r"^linux-image-(?P<v>\d[^_]*)_[^_]+_[^_]+\.deb$")
_RPM = re.compile(r"^kernel(?:-core)?-(?P<v>\d.*)\.rpm$")
_TARBALL = re.compile(r"^linux-(?P<v>\d+\.\d+(?:\.\d+)?(?:-rc\d+)?)\.tar\.(?:gz|bz2|xz)$")
_PATCH = re.compile(r"^patch-(?P<v>\d+\.\d+(?:\.\d+)?(?:-rc\d+)?(?:-git\d+)?)\.(?:gz|bz2|xz)$")


@dataclass
class Release:
    """A kernel release: its file, kind ("deb", "rpm", "source"), version, patches."""

    path: Path
    kind: str
    version: str
    patches: list[Path] = field(default_factory=list)

    @property
    def package(self) -> bool:
        return self.kind in ("deb", "rpm")


class ReleaseError(Exception):
    """A file looks like a release but cannot be tested (a patch without its tarball)."""


def release_of(path: Path, tarballs: dict[str, Path]) -> Release | None:
    """The release `path` is (None: not a release); `tarballs` are the mirror's source
    tarballs by version, for a patch's base. ReleaseError for a patch without one."""
    name = path.name
    for kind, pattern in (("deb", _DEB), ("rpm", _RPM), ("source", _TARBALL)):
        match = pattern.match(name)
        if match:
            return Release(path, kind, match.group("v"))
    match = _PATCH.match(name)
    if not match:
        return None
    version = match.group("v")
    base = patch_base(version, tarballs)
    if base is None:
        raise ReleaseError(f"{name}: no tarball it applies to in the mirror (linux-X.Y.tar.*)")
    return Release(tarballs[base], "source", version, [path])


def tarball_version(name: str) -> str | None:
    match = _TARBALL.match(name)
    return match.group("v") if match else None


def patch_base(version: str, tarballs: dict[str, Path]) -> str | None:
    """The tarball version a patch applies to: X.Y for X.Y.Z; for X.Y-rcN (or -gitN) the
    newest X'.Y' before X.Y (a kernel.org mainline series)."""
    numbers = _numbers(version)
    releases = sorted((_numbers(v), v) for v in tarballs if re.fullmatch(r"\d+\.\d+", v))
    if "-rc" not in version and "-git" not in version:
        wanted = ".".join(str(n) for n in numbers[:2])
        return wanted if wanted in tarballs else None
    before = [v for n, v in releases if n < numbers[:2]]
    return before[-1] if before else None


def _numbers(version: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", version.split("-", 1)[0])]


def uname_prefix(release: Release) -> str:
    """What `uname -r` starts with once the release runs: a package's own name for it; for
    a source release X.Y.Z[-rcN] (Z is 0 when not given; the config may add a suffix)."""
    if release.package:
        return release.version
    numbers = (_numbers(release.version) + [0, 0, 0])[:3]
    rc = re.search(r"-rc\d+", release.version)
    return ".".join(map(str, numbers)) + (rc.group(0) if rc else "")


def queued_name(release: Release, control: Path) -> str:
    """The name of the queued file: `<version>-<control's name without .srv>.srv`."""
    stem = control.name[: -len(".srv")] if control.name.endswith(".srv") else control.name
    return f"{release.version}-{stem}.srv"


def preamble(release: Release, queue: str, configs: dict[str, str], control: Path) -> str:
    """Autotest's preamble (kernel, config, patches), and kernel_path and configs."""
    config = configs.get(queue, DEFAULT_CONFIG)
    return (
        f"# Queued by `mhtest queue mirror` on queue {queue} for kernel {release.version}\n"
        f"# (from {release.path}), wrapping {control}.\n"
        f"kernel = {release.version!r}\n"
        f"kernel_path = {str(release.path)!r}\n"
        f"config = {config!r}\n"
        f"configs = {dict(sorted(configs.items()))!r}\n"
        f"patches = {[str(p) for p in release.patches]!r}\n"
    )


def server_control(release: Release, queue: str, configs: dict[str, str], control: Path) -> str:
    """A `*.srv` of the mapping with the preamble before its text."""
    text = control.read_text(encoding="utf-8")
    return preamble(release, queue, configs, control) + "\n" + text


def client_wrapper(release: Release, queue: str, configs: dict[str, str], control: Path) -> str:
    """A client control file wrapped: the release installed and booted on every machine,
    then the control file run there (see the module docstring)."""
    install = _PACKAGE if release.package else _SOURCE
    kernel_class = {"deb": "deb_kernel.DEBKernel", "rpm": "rpm_kernel.RPMKernel"}.get(
        release.kind, ""
    )
    body = _WRAPPER.format(
        install=install.format(kernel_class=kernel_class, timeout=BUILD_TIMEOUT).strip("\n"),
    )
    return (
        preamble(release, queue, configs, control)
        + f"control = {str(control)!r}\n"
        + f"queue = {queue!r}\n"
        + f"booted = {uname_prefix(release)!r}  # what `uname -r` starts with once booted\n"
        + body
    )


_WRAPPER = '''

def boot_kernel(host, machine):
    """Install and boot the release on `host`."""
{install}


def kernel_then_tests(machine):
    host = hosts.create_host(machine)
    boot_kernel(host, machine)
    running = host.run("uname -r").stdout.strip()
    if not running.startswith(booted):
        raise error.TestError(f"{{machine}} booted kernel {{running}}, not {{kernel}}")
    job.record("GOOD", machine, "boot", f"booted {{running}}")
    autotest.Autotest(host).run(control, ".", host)


job.parallel_simple(kernel_then_tests, machines)
'''

_PACKAGE = """
    package = {kernel_class}()
    package.get(kernel_path)
    package.install(host)
    host.reboot()
"""

_SOURCE = """
    build = host.get_tmp_dir()
    names = []
    for path in [kernel_path, *patches]:
        names.append(os.path.basename(path))
        host.send_file(path, build + "/" + names[-1])
    unpack = {{".xz": "xzcat", ".bz2": "bzcat", ".gz": "zcat"}}
    steps = [f"cd {{build}}", f"tar xf {{names[0]}}", "cd linux-*/"]
    for name in names[1:]:
        steps.append(f"{{unpack[os.path.splitext(name)[1]]}} ../{{name}} | patch -p1 -s")
    machine_config = configs.get(machine, configs.get(queue, config))
    steps += [
        f'cp "{{machine_config}}" .config',
        "make olddefconfig",
        "make -j$(nproc)",
        "make modules_install",
        "make install",
    ]
    host.run(" && ".join(steps), timeout={timeout})
    host.reboot()
"""
