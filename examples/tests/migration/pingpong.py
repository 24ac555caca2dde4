"""Ping-pong: vm1 goes back and forth four times, each round planned by the master host.

    mhtest run examples/tests/migration/pingpong.py --hosts h1,h2
    mhtest run examples/tests/migration/pingpong.py -p migration_protocol=exec

Each round opens with an exchange the master (the first host, ``master_id()``) drives: it
says which host sends the VM and which receives it, and every host follows that plan (as
tp-qemu's ping-pong test syncs each round). After each hop the destination checks the pattern
the VM carries in RAM. At the end exactly one QEMU runs, on the master, where vm1 started.
"""

from __future__ import annotations

from mhtest.virt.migration import MigrationFailed, MultihostMigration


class PingPong(MultihostMigration):
    """Four hops of vm1, h1 -> h2 -> h1 -> h2 -> h1, the memory pattern intact after each."""

    def migration_scenario(self) -> None:
        rounds = int(self.params.get("rounds", default=4))
        master = self.master_id()
        other = next(h for h in self.hosts if h != master)
        self._hosts_barrier(self.hosts, "pingpong", "start", 120)
        for n in range(rounds):
            plan = None
            if self.host == master:
                src, dst = (master, other) if n % 2 == 0 else (other, master)
                plan = {"round": n, "src": src, "dst": dst}
            plans = self.sync.exchange(
                f"pingpong:round{n}", plan, count=len(self.hosts), timeout=120
            )
            plan = plans[master]
            if plan["round"] != n:
                raise MigrationFailed(f"{self.host}: expected round {n}, the master sent {plan}")
            self.migrate_wait("vm1", plan["src"], plan["dst"], check_work=self.check_memory_pattern)
        counts = self.sync.exchange(
            "pingpong:end", len(self.running_vms()), count=len(self.hosts), timeout=120
        )
        last = master if rounds % 2 == 0 else other
        if counts != {h: int(h == last) for h in self.hosts}:
            raise MigrationFailed(f"QEMUs running per host after {rounds} hops: {counts}")
