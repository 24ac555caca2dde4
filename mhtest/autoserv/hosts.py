"""The `hosts` module of a server control file: create_host, SSHHost, LocalHost, KVMGuest.

`hosts.create_host(name)` takes what `--hosts` takes: `[user@]name[:port]`, an ssh_config
alias (the job's --ssh-config, else ~/.ssh/config) or an inventory name (the job's
--inventory); a machine of the job's `machines` is the very place the job was given.
Autoserv's keywords it has no use for (`initialize`, `auto_monitor`, …) are accepted and
ignored. `hosts.SSHHost(hostname, user="root", port=22, …)` keeps Autoserv's signature: the
user is the one the ssh_config alias or inventory names, else root. Every host a control file
makes is closed when it ends.

`place_of(host)` is the other way: the place (HostConfig) the dispatcher runs tests at for a
Host object, a name, or None (this machine).
"""

from __future__ import annotations

import logging
import types
from typing import Any

from mhtest.autoserv.machine_modules import kvm_guest_class
from mhtest.autoserv.runtime import Runtime
from mhtest.dispatch import local_place
from mhtest.hosts.base import Host
from mhtest.hosts.inventory import LOCAL, HostConfig, make_host, resolve_hosts

LOG = logging.getLogger(__name__)
#: SSHHost keywords a control file may pass: the rest are Autoserv's and ignored.
SSH_KEYWORDS = {
    "user",
    "port",
    "key_file",
    "known_hosts",
    "accept_new_host_keys",
    "connect_timeout",
    "name",
    "params",
}


def config_for(runtime: Runtime, name: str) -> HostConfig:
    """The place `name` means: one of the job's, else as `--hosts` would resolve it."""
    for place in runtime.places:
        if place.name == name:
            return place
    options = runtime.options
    configs = resolve_hosts(
        [name], inventory_path=options.inventory, ssh_config_path=options.ssh_config
    )
    if len(configs) != 1:
        from mhtest.hosts.errors import HostSpecError

        raise HostSpecError(f"{name!r} names {len(configs)} hosts (a group?): name one host")
    return configs[0]


def place_of(runtime: Runtime, host: Any) -> HostConfig:
    """The place tests run at for `host`: a Host object, a host name, or None (here)."""
    if host is None:
        return local_place(runtime.here) if runtime.here != LOCAL else local_place()
    if isinstance(host, str):
        return config_for(runtime, host)
    if not isinstance(host, Host):
        raise TypeError(f"not a host: {host!r} (give a host object or a host name)")
    from mhtest.hosts.local import LocalHost

    if isinstance(host, LocalHost):
        return local_place(host.name)
    known = next((p for p in runtime.places if p.name == host.name), None)
    keys = getattr(host, "key_files", None) or []
    return HostConfig(
        name=host.name,
        address=host.hostname,
        port=host.port,
        user=host.user,
        key_file=keys[0] if keys else (known.key_file if known else None),
        params=dict(host.params),
        known_hosts=getattr(host, "known_hosts", None),
        connect_timeout=getattr(host, "connect_timeout", None),
        secrets=list(known.secrets) if known else [],
    )


def hosts_module(runtime: Runtime) -> types.ModuleType:
    """A fresh `hosts` module for one control file (see the module docstring)."""
    from mhtest.hosts.local import LocalHost
    from mhtest.hosts.ssh import SSHHost as BaseSSHHost

    options = runtime.options

    def create_host(hostname: Any, **kwargs: Any) -> Host:
        """A Host for `hostname` (see mhtest.autoserv.hosts): SSHHost, or LocalHost for local."""
        if isinstance(hostname, Host):
            return hostname
        ignored = sorted(set(kwargs) - SSH_KEYWORDS)
        if ignored:
            LOG.debug("create_host(%r): ignoring %s", hostname, ", ".join(ignored))
        given = {k: v for k, v in kwargs.items() if k in SSH_KEYWORDS and v is not None}
        config = config_for(runtime, str(hostname))
        given.setdefault("accept_new_host_keys", options.accept_new_host_keys)
        if config.is_local:
            given = {"name": given["name"]} if "name" in given else {}
        return runtime.track(make_host(config, **given))

    class SSHHost(BaseSSHHost):
        """Autoserv's SSHHost(hostname, user="root", port=22, …): see mhtest.autoserv.hosts."""

        def __init__(
            self, hostname: str, user: str | None = None, port: int | None = None, **kwargs: Any
        ) -> None:
            ignored = sorted(set(kwargs) - SSH_KEYWORDS)
            if ignored:
                LOG.debug("SSHHost(%r): ignoring %s", hostname, ", ".join(ignored))
            given = {k: v for k, v in kwargs.items() if k in SSH_KEYWORDS}
            given.setdefault("accept_new_host_keys", options.accept_new_host_keys)
            config = config_for(runtime, hostname)
            super().__init__(
                config.address,
                user=user or config.user or "root",
                port=port or config.port,
                key_file=given.pop("key_file", None) or config.key_file,
                known_hosts=given.pop("known_hosts", None) or config.known_hosts,
                connect_timeout=given.pop("connect_timeout", None) or config.connect_timeout,
                name=given.pop("name", None) or hostname,
                params=given.pop("params", None) or config.params,
                ssh_config=False,  # the config holds what ssh_config said already
                **given,
            )
            runtime.track(self)

    module = types.ModuleType("hosts", "Hosts for control files: create_host, SSHHost, LocalHost.")
    module.create_host = create_host  # type: ignore[attr-defined]
    module.SSHHost = SSHHost  # type: ignore[attr-defined]
    module.LocalHost = LocalHost  # type: ignore[attr-defined]
    module.Host = Host  # type: ignore[attr-defined]
    module.KVMGuest = kvm_guest_class(runtime)  # type: ignore[attr-defined]
    return module
