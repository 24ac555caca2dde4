"""Virtual machines for multi-host tests: QEMU driven through QMP, and live migration.

- ``mhtest.virt.qemu``: VM / VMConfig, one qemu-system process and its QMP monitor.
- ``mhtest.virt.guest``: guests to migrate (a memory pattern, a small booted Linux).
- ``mhtest.virt.migration``: MultihostMigration, the multi-host migration test base.

Nothing is imported here so that ``import mhtest.virt`` stays cheap.
"""
