"""Host strings, ~/.ssh/config aliases and Ansible-style YAML inventories -> HostConfig.

A host is written ``[user@]name[:port]`` (IPv6 in brackets: ``[::1]:2222``), or is an alias
from the ssh_config file (HostName, User, Port, IdentityFile, UserKnownHostsFile,
ConnectTimeout, ProxyJump, ProxyCommand), or a host or group name from an inventory in
Ansible's YAML shape::

    all:
      hosts:
        web1: {ansible_host: 127.0.0.2, ansible_port: 2222, ansible_user: root,
               ansible_ssh_private_key_file: ~/.ssh/id_ed25519, role: server}
      children:
        clients:
          hosts:
            web2: {ansible_host: 127.0.0.3}
          vars: {role: client}

``ansible_timeout`` (or ssh_config's ConnectTimeout) bounds the SSH connect. Keys that are not
``ansible_*`` become the host's params (host values win over group vars). ``mhtest_secrets``
lists params never to write in clear (names like ``db_password`` are masked anyway);
``ansible_ssh_pass`` is refused: mhtest logs in with keys.
``local`` (or ``ansible_connection: local``) is this machine, run without SSH.

A host behind a jump host (a bastion, a VM's hypervisor) is reached as OpenSSH does: through
each ProxyJump host in turn (their keys and known_hosts, else the target's), or through a
ProxyCommand; in an inventory, ``ansible_ssh_common_args: "-J bastion"`` (or ``-o
ProxyJump=…``, ``-o ProxyCommand=…``) says the same.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mhtest.hosts import _paramiko
from mhtest.hosts.errors import HostSpecError

log = logging.getLogger(__name__)

LOCAL = "local"
HOST_RE = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9_.][A-Za-z0-9_.\-]*)@)?"
    r"(?P<name>[A-Za-z0-9_][A-Za-z0-9_.\-]*|\[[0-9A-Fa-f:.%A-Za-z]+\])"
    r"(?::(?P<port>[0-9]+))?$"
)
#: The most hops a ProxyJump may chain (a longer one is taken for a loop).
MAX_JUMPS = 8
#: Login passwords: refused (mhtest logs in with keys only).
PASSWORD_KEYS = {"ansible_ssh_pass", "ansible_password", "ansible_ssh_password"}
#: A host or group var listing the params never to write in clear (see mhtest.secrets).
SECRETS_KEY = "mhtest_secrets"
ANSIBLE_KEYS = {
    "ansible_host": "address",
    "ansible_ssh_host": "address",
    "ansible_port": "port",
    "ansible_ssh_port": "port",
    "ansible_user": "user",
    "ansible_ssh_user": "user",
    "ansible_ssh_private_key_file": "key_file",
    "ansible_private_key_file": "key_file",
    "ansible_timeout": "connect_timeout",
    "ansible_ssh_timeout": "connect_timeout",
}


#: Kinds of place: how a host is reached (each kind has its spawner plugin).
SSH = "ssh"


@dataclass
class HostConfig:
    """Where a host is and how to log in; `params` are its per-host test parameters.

    `kind` says how it is reached, and so which spawner runs tests there: "ssh", or
    "local" (this machine, without SSH: `local`, or `ansible_connection: local`).
    """

    name: str
    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    known_hosts: str | None = None
    connect_timeout: float | None = None  # seconds; SSHHost's default when None
    kind: str = SSH
    secrets: list[str] = field(default_factory=list)  # param names never written in clear
    #: Reached through another SSH host (ssh_config's ProxyJump: the last hop, whose own
    #: `jump` is the hop before), or through a command's stdin and stdout (ProxyCommand).
    jump: HostConfig | None = None
    proxy_command: str | None = None

    def __post_init__(self) -> None:
        if self.address == LOCAL:
            self.kind = LOCAL
        if isinstance(self.jump, dict):  # (read back from JSON)
            self.jump = HostConfig(**self.jump)

    @property
    def is_local(self) -> bool:
        """True for a place on this machine, run without SSH."""
        return self.kind == LOCAL


def parse_host_string(text: str) -> tuple[str | None, str, int | None]:
    """Split ``[user@]name[:port]`` into (user, name, port); HostSpecError if malformed."""
    match = HOST_RE.match(text.strip())
    if not match:
        raise HostSpecError(
            f"malformed host {text!r}: write [user@]name[:port], e.g. root@10.0.0.5:2222"
        )
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise HostSpecError(f"malformed host {text!r}: port {port} is not in 1..65535")
    name = match.group("name")
    if name.startswith("["):
        name = name[1:-1]
    return match.group("user"), name, int(port) if port else None


def _split_specs(spec: str | Sequence[str]) -> list[str]:
    items = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    items = [item.strip() for item in items]
    if not items or any(not item for item in items):
        raise HostSpecError(f"empty host name in {spec!r}: separate hosts with single commas")
    return items


def resolve_hosts(
    spec: str | Sequence[str],
    inventory_path: str | None = None,
    ssh_config_path: str | None = None,
) -> list[HostConfig]:
    """Turn host strings (a comma-separated string or a list) into HostConfigs.

    Names are looked up in the inventory (hosts and groups) first, then in the ssh_config file
    (default ~/.ssh/config when it exists); anything else is taken as a host name or address.
    """
    ssh_config = _load_ssh_config(ssh_config_path)
    inventory = load_inventory(inventory_path, ssh_config) if inventory_path else None
    configs: list[HostConfig] = []
    for item in _split_specs(spec):
        if inventory is not None and item in inventory.groups:
            configs.extend(inventory.hosts[name] for name in inventory.groups[item])
            continue
        if inventory is not None and item in inventory.hosts:
            configs.append(inventory.hosts[item])
            continue
        if item == LOCAL:
            configs.append(HostConfig(name=LOCAL, address=LOCAL, port=0, kind=LOCAL))
            continue
        user, name, port = parse_host_string(item)
        configs.append(_from_ssh_config(item, user, name, port, ssh_config))
    return configs


def ssh_config_entry(name: str, path: str | None = None) -> HostConfig:
    """What the ssh_config file (default ~/.ssh/config, when it exists) says of `name`.

    HostName, User, Port, IdentityFile, UserKnownHostsFile and ConnectTimeout, as
    `resolve_hosts` reads them: SSHHost("h2") and `--hosts h2` reach the same machine.
    """
    return _from_ssh_config(name, None, name, None, _load_ssh_config(path))


def _load_ssh_config(path: str | None) -> Any:
    paramiko = _paramiko.load()

    explicit = path is not None
    path = os.path.expanduser(path or "~/.ssh/config")
    if not os.path.exists(path):
        if explicit:
            raise HostSpecError(f"ssh_config file {path} does not exist")
        return None
    try:
        return paramiko.SSHConfig.from_path(path)
    except (OSError, paramiko.ConfigParseError, ValueError) as exc:
        raise HostSpecError(f"ssh_config file {path}: cannot parse: {exc}") from None


def _from_ssh_config(
    item: str, user: str | None, name: str, port: int | None, ssh_config: Any, depth: int = 0
) -> HostConfig:
    address, key_file, known_hosts, connect_timeout = name, None, None, None
    jump, proxy_command = None, None
    if ssh_config is not None:
        entry = ssh_config.lookup(name)
        address = entry.get("hostname", name)
        user = user or entry.get("user")
        if port is None and "port" in entry:
            try:
                port = int(entry["port"])
            except ValueError:
                raise HostSpecError(
                    f"ssh_config entry for {name}: Port {entry['port']!r} is not a number"
                ) from None
        if entry.get("identityfile"):
            key_file = os.path.expanduser(entry["identityfile"][0])
        if entry.get("userknownhostsfile"):
            known_hosts = os.path.expanduser(entry["userknownhostsfile"].split()[0])
        if entry.get("connecttimeout"):
            connect_timeout = _timeout(f"ssh_config entry for {name}", entry["connecttimeout"])
        if str(entry.get("proxycommand") or "none").lower() != "none":
            proxy_command = str(entry["proxycommand"])  # (%h, %p, %r filled in by paramiko)
        elif str(entry.get("proxyjump") or "none").lower() != "none":
            jump = jump_config(
                str(entry["proxyjump"]), ssh_config, f"ssh_config entry for {name}", depth
            )
    return HostConfig(
        name=item,
        address=address,
        port=port or 22,
        user=user,
        key_file=key_file,
        known_hosts=known_hosts,
        connect_timeout=connect_timeout,
        jump=jump,
        proxy_command=proxy_command,
    )


def jump_config(spec: str, ssh_config: Any, where: str, depth: int = 0) -> HostConfig:
    """The hosts of a ProxyJump `spec` ("[user@]host[:port],..."), each looked up in
    `ssh_config`: the last hop, the others chained through its `jump` (a single hop's own
    ProxyJump counts too, as OpenSSH's does). HostSpecError for a malformed or endless one."""
    hops = [hop.strip() for hop in spec.split(",") if hop.strip()]
    if not hops or depth + len(hops) > MAX_JUMPS:
        raise HostSpecError(
            f"{where}: ProxyJump {spec!r}: no hosts, or over {MAX_JUMPS} hops (a loop?)"
        )
    before: HostConfig | None = None
    for hop in hops:
        if hop.startswith("ssh://"):
            hop = hop[len("ssh://") :]
        try:
            hop_user, hop_name, hop_port = parse_host_string(hop)
        except HostSpecError:
            raise HostSpecError(
                f"{where}: ProxyJump host {hop!r} is not [user@]host[:port]"
            ) from None
        config = _from_ssh_config(hop, hop_user, hop_name, hop_port, ssh_config, depth + 1)
        if before is not None:  # a later hop of a list: reached through the one before
            config.jump, config.proxy_command = before, None
        before = config
    assert before is not None
    return before


def _ansible_ssh_args(args: str, where: str) -> dict[str, str]:
    """What mhtest takes from Ansible's ansible_ssh_common_args / ansible_ssh_extra_args:
    {"jump": `-J HOST` or `-o ProxyJump=HOST`, "proxy_command": `-o ProxyCommand=CMD`,
    "known_hosts": `-o UserKnownHostsFile=FILE`} (those given)."""
    try:
        words = shlex.split(args)
    except ValueError as exc:
        raise HostSpecError(f"{where}: cannot read {args!r}: {exc}") from None
    found: dict[str, str] = {}
    options = {"proxyjump": "jump", "proxycommand": "proxy_command"}
    options["userknownhostsfile"] = "known_hosts"
    for i, word in enumerate(words):
        value = words[i + 1] if i + 1 < len(words) else ""
        if word.startswith("-J"):
            found["jump"] = value if word == "-J" else word[2:]
        elif word.startswith("-o"):
            key, _, setting = (value if word == "-o" else word[2:]).partition("=")
            if key.strip().lower() in options:
                found[options[key.strip().lower()]] = setting.strip()
    if "known_hosts" in found:
        found["known_hosts"] = os.path.expanduser(found["known_hosts"].split()[0])
    return found


def _timeout(where: str, value: Any) -> float:
    try:
        seconds = float(value)
        if seconds <= 0:
            raise ValueError
    except (TypeError, ValueError):
        raise HostSpecError(f"{where}: timeout {value!r} is not a positive number") from None
    return seconds


@dataclass
class Inventory:
    """Hosts by name, and the host names of each group (`all` included)."""

    hosts: dict[str, HostConfig]
    groups: dict[str, list[str]]


def load_inventory(path: str, ssh_config: Any = None) -> Inventory:
    """Read an Ansible-style YAML inventory; HostSpecError naming the file on any problem.

    A ProxyJump host in ansible_ssh_common_args (or _extra_args) is looked up in
    `ssh_config` (a paramiko SSHConfig), as OpenSSH would for Ansible.
    """
    import yaml

    path = os.path.expanduser(path)
    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except OSError as exc:
        raise HostSpecError(f"inventory {path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise HostSpecError(f"inventory {path}:{line}: invalid YAML: {problem}") from None
    if not isinstance(data, dict) or not data:
        raise HostSpecError(f"inventory {path}: expected a mapping with an 'all:' group at the top")
    host_vars: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[str]] = {}
    for group, body in data.items():
        _walk_group(path, str(group), body, {}, host_vars, groups)
    hosts = {
        name: _host_config(path, name, merged, ssh_config) for name, merged in host_vars.items()
    }
    groups.setdefault("all", list(hosts))
    return Inventory(hosts=hosts, groups=groups)


def _mapping(path: str, where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HostSpecError(
            f"inventory {path}: {where} must be a mapping, not {type(value).__name__}"
        )
    return value


def _walk_group(
    path: str,
    group: str,
    body: Any,
    inherited: dict[str, Any],
    host_vars: dict[str, dict[str, Any]],
    groups: dict[str, list[str]],
) -> list[str]:
    body = _mapping(path, f"group {group!r}", body)
    unknown = set(body) - {"hosts", "children", "vars"}
    if unknown:
        raise HostSpecError(
            f"inventory {path}: group {group!r} has unknown key(s) {sorted(unknown)}; "
            "expected hosts, children, vars"
        )
    group_vars = {**inherited, **_mapping(path, f"{group}.vars", body.get("vars"))}
    members: list[str] = []
    for name, values in _mapping(path, f"{group}.hosts", body.get("hosts")).items():
        name = str(name)
        values = _mapping(path, f"host {name!r}", values)
        merged = host_vars.setdefault(name, {})
        for key, value in group_vars.items():
            merged.setdefault(key, value)
        merged.update(values)
        members.append(name)
    for child, child_body in _mapping(path, f"{group}.children", body.get("children")).items():
        members += _walk_group(path, str(child), child_body, group_vars, host_vars, groups)
    groups[group] = list(dict.fromkeys(groups.get(group, []) + members))
    return members


def _host_config(
    path: str, name: str, values: dict[str, Any], ssh_config: Any = None
) -> HostConfig:
    fields: dict[str, Any] = {}
    params: dict[str, Any] = {}
    secrets: list[str] = []
    ssh_args: dict[str, str] = {}
    for key, value in values.items():
        if key in ANSIBLE_KEYS:
            fields[ANSIBLE_KEYS[key]] = value
        elif key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
            ssh_args.update(
                _ansible_ssh_args(str(value), f"inventory {path}: host {name!r}: {key}")
            )
        elif key == "ansible_connection":
            fields["connection"] = value
        elif key in PASSWORD_KEYS:
            raise HostSpecError(
                f"inventory {path}: host {name!r}: {key} is not supported: mhtest logs in with "
                "SSH keys (ansible_ssh_private_key_file, or your ssh-agent); install the key "
                "on the host (ssh-copy-id) and remove the password"
            )
        elif key == SECRETS_KEY:
            secrets = [str(v) for v in (value if isinstance(value, list) else [value])]
        elif not str(key).startswith("ansible_"):
            params[str(key)] = value
    port = fields.get("port", 22)
    try:
        port = int(port)
        if not 0 < port < 65536:
            raise ValueError
    except (TypeError, ValueError):
        raise HostSpecError(
            f"inventory {path}: host {name!r}: ansible_port {port!r} is not a port number"
        ) from None
    address = str(fields.get("address", name))
    connection = str(fields.get("connection") or SSH)
    if connection not in (LOCAL, SSH, "paramiko", "smart"):
        raise HostSpecError(
            f"inventory {path}: host {name!r}: ansible_connection {connection!r} is not "
            "supported; use ssh or local"
        )
    key_file = fields.get("key_file")
    jump, jump_spec = None, ssh_args.get("jump")
    proxy_command = ssh_args.get("proxy_command")
    if jump_spec and not proxy_command and jump_spec.lower() != "none":
        jump = jump_config(jump_spec, ssh_config, f"inventory {path}: host {name!r}")
    if proxy_command:  # OpenSSH's tokens: the target's address, port and user
        proxy_command = (
            proxy_command.replace("%h", address).replace("%p", str(port))
            .replace("%r", str(fields.get("user") or ""))
        )  # fmt: skip
    return HostConfig(
        name=name,
        address=address,
        port=port,
        user=str(fields["user"]) if fields.get("user") is not None else None,
        key_file=os.path.expanduser(str(key_file)) if key_file else None,
        jump=jump,
        proxy_command=proxy_command,
        known_hosts=ssh_args.get("known_hosts"),
        params=params,
        connect_timeout=(
            _timeout(f"inventory {path}: host {name!r}", fields["connect_timeout"])
            if fields.get("connect_timeout") is not None
            else None
        ),
        kind=LOCAL if connection == LOCAL else SSH,
        secrets=secrets,
    )


def make_host(config: HostConfig, **opts: Any):
    """An SSHHost (or a LocalHost for a local place) for `config`; `opts` go to SSHHost."""
    if config.is_local:
        from mhtest.hosts.local import LocalHost

        return LocalHost(name=config.name, params=config.params)
    from mhtest.hosts.ssh import SSHHost

    if config.known_hosts and "known_hosts" not in opts:
        opts["known_hosts"] = config.known_hosts
    if config.key_file and "key_file" not in opts:
        opts["key_file"] = config.key_file
    if config.connect_timeout and "connect_timeout" not in opts:
        opts["connect_timeout"] = config.connect_timeout
    if config.jump is not None and "jump" not in opts:
        opts["jump"] = config.jump
    if config.proxy_command and "proxy_command" not in opts:
        opts["proxy_command"] = config.proxy_command
    return SSHHost(
        config.address,
        user=config.user,
        port=config.port,
        name=opts.pop("name", config.name),
        params=config.params,
        ssh_config=False,  # the config holds what ssh_config said already
        **opts,
    )
