"""Guests for migration tests: a known memory pattern in an idle VM, or a small booted Linux.

The memory pattern guest needs nothing but QEMU: ``-device loader`` puts a file of
pseudo-random bytes into guest RAM at a fixed address before the CPU runs. An incoming VM is
started *without* the loader, so the pattern can only reach its RAM through the migration.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, replace
from pathlib import Path

from mhtest.virt.qemu import VM, VMConfig

PATTERN_ADDR = 0x2000000  # 32 MiB: above what SeaBIOS touches, below its high-memory zone


@dataclass
class MemoryPattern:
    """A file of pseudo-random bytes loaded into guest RAM at ``addr``."""

    path: str
    addr: int
    size: int
    sha256: str

    @classmethod
    def create(
        cls, path: str | Path, seed: int = 1, size: int = 8 << 20, addr: int = PATTERN_ADDR
    ) -> MemoryPattern:
        data = random.Random(seed).randbytes(size)
        Path(path).write_bytes(data)
        return cls(str(Path(path).absolute()), addr, size, hashlib.sha256(data).hexdigest())

    def config(self, config: VMConfig) -> VMConfig:
        """``config`` with the pattern loaded into RAM at start."""
        return replace(config, loaders=[*config.loaders, (self.path, self.addr)])

    def dump_sha256(self, vm: VM, dump_path: str | Path) -> str:
        """Dump the pattern's region from ``vm``'s RAM and return its SHA-256."""
        vm.pmemsave(self.addr, self.size, dump_path)
        return sha256_file(dump_path)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def incoming_config(config: VMConfig) -> VMConfig:
    """The config a migration destination starts with: the same, minus RAM loaders.

    Loaders carry no device state, so leaving them out is invisible to the migration; it only
    makes sure the destination's RAM content can come from nowhere but the source.
    """
    return replace(config, loaders=[])
