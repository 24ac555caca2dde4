"""Virtual machines for multi-host tests: QEMU driven through QMP, and live migration.

- ``mhtest.virt.qemu``: VM / VMConfig, one qemu-system process and its QMP monitor
  (``qmp``: the monitor; ``console``: the serial console as a shell session).
- ``mhtest.virt.guest``: guests to migrate (a memory pattern, a small booted Linux).
- ``mhtest.virt.migration``: MultihostMigration, the multi-host migration test base;
  ``migration_flow``: one migration on its two ends, where the hooks run;
  ``migration_data``: its data (mig_data), settings from params, figures.
- ``mhtest.virt.testing``: run migration workers without a job; find leftover QEMUs.

Nothing is imported here so that ``import mhtest.virt`` stays cheap.
"""
