"""The `kvm`, `deb_kernel` and `rpm_kernel` modules of a server control file.

Autoserv's control files that break machines use them as they are::

    kvm_on_remote_host = kvm.KVM(remote_host)
    kvm_on_remote_host.install(addresses)
    g = hosts.KVMGuest(kvm_on_remote_host, qemu_options)
    kernel = deb_kernel.DEBKernel()

Every KVM object and KVMGuest a control file makes is closed when it ends, whatever
happens: its guests' QEMU processes do not outlive the control file.
"""

from __future__ import annotations

import types
from typing import Any

from mhtest.autoserv.runtime import Runtime


def kvm_module(runtime: Runtime) -> types.ModuleType:
    """A fresh `kvm` module for one control file: KVM, tracked to be closed at the end."""
    from mhtest.autoserv.kvm import KVM as BaseKVM
    from mhtest.autoserv.kvm import KVMError

    class KVM(BaseKVM):
        """Autoserv's kvm.KVM(host): see mhtest.autoserv.kvm."""

        def __init__(self, host: Any) -> None:
            super().__init__(host)
            runtime.track(self)

    module = types.ModuleType("kvm", "QEMU/KVM on a host, for KVMGuest hosts.")
    module.KVM = KVM  # type: ignore[attr-defined]
    module.KVMError = KVMError  # type: ignore[attr-defined]
    return module


def kvm_guest_class(runtime: Runtime) -> type:
    """`hosts.KVMGuest` of one control file: a KVMGuest tracked to be closed at the end."""
    from mhtest.hosts.kvm_guest import KVMGuest as BaseKVMGuest

    class KVMGuest(BaseKVMGuest):
        """Autoserv's hosts.KVMGuest(kvm, qemu_options): see mhtest.hosts.kvm_guest."""

        def __init__(self, kvm: Any, qemu_options: Any, **kwargs: Any) -> None:
            # As for the control file's SSHHost: the job's --ssh-accept-new-host-keys.
            kwargs.setdefault("accept_new_host_keys", runtime.options.accept_new_host_keys)
            super().__init__(kvm, qemu_options, **kwargs)
            runtime.track(self)

    return KVMGuest


def kernel_modules() -> dict[str, types.ModuleType]:
    """The `deb_kernel` and `rpm_kernel` modules (DEBKernel, RPMKernel, KernelError)."""
    from mhtest.autoserv.deb_kernel import DEBKernel
    from mhtest.autoserv.kernel import KernelError
    from mhtest.autoserv.rpm_kernel import RPMKernel

    modules = {}
    for name, cls in (("deb_kernel", DEBKernel), ("rpm_kernel", RPMKernel)):
        module = types.ModuleType(name, f"{cls.__name__}: a binary kernel package.")
        setattr(module, cls.__name__, cls)
        module.KernelError = KernelError  # type: ignore[attr-defined]
        modules[name] = module
    return modules
