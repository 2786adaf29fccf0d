"""Virtual network use cases: create, delete, attach VMs, forwards, firewall rules.

One lock serialises every change to networks, because the nftables ruleset is
rendered whole from the database and applied in one transaction: two changes
at once must not race to apply stale renderings. Host calls (netlink, nft,
dnsmasq) run in a worker thread so the event loop keeps serving.

Networks belong to a project, and every name a caller gives (network, VM) is
looked up in the caller's project: another project's networks, forwards and rules
answer 404 exactly as missing ones do. What the host shares stays host-wide:
subnets never overlap and a host port is forwarded once, whichever project asks.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections.abc import Callable, Collection
from typing import TypeVar

from pydantic import BaseModel

from hangar.errors import Conflict, InvalidInput, NextStep, NotFound
from hangar.paths import Paths
from hangar.runner import CommandRunner
from hangar.services.events import EventBus
from hangar.services.net import apply, links
from hangar.services.net.dnsmasq_conf import DnsmasqFiles, parse_leases
from hangar.services.net.nft_render import NetState, render_ruleset
from hangar.services.undo import revert_on_error
from hangar.spec.network import (
    AttachedNic,
    FirewallRule,
    FirewallRuleCreate,
    Forward,
    ForwardCreate,
    NetworkConfig,
    NetworkCreate,
    allocate_ip,
    check_cidr,
    check_host_address,
    resolve_network,
)
from hangar.spec.vm import NicConfig, VMConfig
from hangar.state.networks import NetworkRepository
from hangar.state.vms import DEFAULT_PROJECT, VMRepository

log = logging.getLogger(__name__)
T = TypeVar("T")


class NicAddress(BaseModel):
    """One NIC's place on a network, as list and info show it."""

    network: str
    mac: str
    ip: str | None
    # Whether dnsmasq has handed the address out (the guest asked for it).
    leased: bool


class NetworkView(BaseModel):
    config: NetworkConfig
    vms: list[str]
    dnsmasq_pid: int | None
    forwards: list[Forward]


class NetworkService:
    def __init__(
        self,
        paths: Paths,
        repo: NetworkRepository,
        vms: VMRepository,
        runner: CommandRunner,
        events: EventBus | None = None,
        host_links: links.LinkOps = links,
        uplinks_of: Callable[[str], Collection[str]] = lambda project: (),
        sandbox: bool = False,
    ):
        self.paths = paths
        # dnsmasq in a namespace of its own, dropping to nobody (net/apply.py);
        # hangard turns it on, tests with the stand-in dnsmasq leave it off.
        self.sandbox = sandbox
        self.repo = repo
        self.vms = vms
        self.runner = runner
        self.events = events
        # Bridges and taps (netlink). Component tests swap in an in-memory fake, so
        # that no test ever makes a link in the namespace it runs in.
        self.links = host_links
        # The uplinks the host administrator allowed a project (ProjectService.uplinks).
        self.uplinks_of = uplinks_of
        self._lock = asyncio.Lock()

    async def _locked(self, fn: Callable[[], T]) -> T:
        async with self._lock:
            return await asyncio.to_thread(fn)

    def files(self, network: NetworkConfig) -> DnsmasqFiles:
        return DnsmasqFiles(self.paths.state / "networks" / network.id, sandboxed=self.sandbox)

    # --- reading ------------------------------------------------------------------

    def _attached(
        self, *, without_vm: str | None = None, without_taps: frozenset[str] = frozenset()
    ) -> list[AttachedNic]:
        """Every network NIC of every VM, on networks that exist (looked up in the VM's
        project: a NIC names a network of its own project)."""
        by_key = {(n.project, n.name): n for n in self.repo.all()}
        result = []
        for record in self.vms.list():
            if record.id == without_vm:
                continue
            for nic in record.config.nics:
                if nic.type != "network" or not nic.network or not nic.tap:
                    continue
                net = by_key.get((record.project, nic.network))
                if net is None or nic.tap in without_taps:
                    continue
                result.append(
                    AttachedNic(
                        vm=record.name,
                        vm_id=record.id,
                        network=net.name,
                        network_id=net.id,
                        tap=nic.tap,
                        mac=nic.mac,
                        ip=nic.ip,
                    )
                )
        return result

    def _forwards(self, nics: list[AttachedNic]) -> list[Forward]:
        """Every project's forwards whose VM is (still) on the forward's network."""
        by_id = {n.id: n for n in self.repo.all()}
        on = {(n.vm_id, n.network_id): n for n in nics}
        result = []
        for row in self.repo.forwards():
            net = by_id.get(row.network_id)
            nic = on.get((row.vm_id, row.network_id))
            if net is not None and nic is not None and nic.ip:
                fields = {**row.spec.model_dump(), "vm": nic.vm}
                result.append(
                    Forward(
                        id=row.id, project=net.project, network=net.name, vm_ip=nic.ip, **fields
                    )
                )
        return result

    def _state(
        self, *, without_vm: str | None = None, without_taps: frozenset[str] = frozenset()
    ) -> NetState:
        nics = self._attached(without_vm=without_vm, without_taps=without_taps)
        return NetState(self.repo.all(), nics, self._forwards(nics), self.repo.rules())

    def all(self, project: str | None = DEFAULT_PROJECT) -> list[NetworkView]:
        """The networks of ``project`` (every project's when it is None)."""
        nics = self._attached()
        forwards = self._forwards(nics)
        nets = self.repo.all() if project is None else self.repo.in_project(project)
        return [
            NetworkView(
                config=net,
                vms=sorted({n.vm for n in nics if n.network_id == net.id}),
                dnsmasq_pid=apply.dnsmasq_pid(self.files(net)) if net.managed else None,
                forwards=[
                    f for f in forwards if f.project == net.project and f.network == net.name
                ],
            )
            for net in nets
        ]

    def get(self, name: str, project: str = DEFAULT_PROJECT) -> NetworkView:
        net = self.repo.get(name, project)
        return next(v for v in self.all(project) if v.config.id == net.id)

    def addresses(self, config: VMConfig, project: str = DEFAULT_PROJECT) -> list[NicAddress]:
        """Each network NIC's address, and whether the guest has taken its lease."""
        result = []
        for nic in config.nics:
            if nic.type != "network" or not nic.network:
                continue
            net = self.repo.find(nic.network, project)
            leased = False
            if net is not None and net.managed:
                try:
                    text = self.files(net).leases.read_text()
                except FileNotFoundError:
                    text = ""
                leased = any(le.mac == nic.mac and le.ip == nic.ip for le in parse_leases(text))
            result.append(NicAddress(network=nic.network, mac=nic.mac, ip=nic.ip, leased=leased))
        return result

    def _publish(self, change: str, net: NetworkConfig) -> None:
        if self.events is not None:
            self.events.publish(
                "network",
                net.project,
                {"change": change, "network": net.name, "id": net.id, "type": net.type},
            )

    # --- applying -----------------------------------------------------------------

    def _apply_rules(self, state: NetState) -> None:
        apply.apply_ruleset(self.runner, render_ruleset(state))

    def _write_dnsmasq(self, net: NetworkConfig, nics: list[AttachedNic]) -> None:
        apply.sync_dnsmasq(self.runner, net, self.files(net), nics)

    def _bring_up(self, net: NetworkConfig, nics: list[AttachedNic]) -> None:
        if not net.managed:
            return
        self.links.ensure_bridge(net.bridge, net.gateway, net.prefixlen)
        self._write_dnsmasq(net, nics)
        apply.start_dnsmasq(self.runner, self.files(net))
        if net.type == "nat":
            self.links.enable_forwarding()

    def _tear_down(self, net: NetworkConfig) -> None:
        if not net.managed:
            return
        files = self.files(net)
        apply.stop_dnsmasq(files)
        self.links.remove_link(net.bridge)
        shutil.rmtree(files.dir, ignore_errors=True)

    async def restore(self) -> None:
        """hangard starts: make bridges, taps, dnsmasq and rules match the database.

        Idempotent and gentle: a dnsmasq still running is adopted, existing taps
        (held open by running QEMUs) are kept, so running VMs notice nothing.
        """

        def work() -> None:
            state = self._state()
            if not state.networks:
                # Nothing of ours to restore: leave the host's firewall alone
                # (deleting the last network already removed hangar's tables).
                return
            nics = list(state.nics)
            for net in state.networks:
                self._bring_up(net, nics)
            bridges = {n.id: n.bridge for n in state.networks}
            for nic in nics:
                if nic.network_id in bridges:
                    self.links.ensure_tap(nic.tap, bridges[nic.network_id])
            self._apply_rules(state)

        await self._locked(work)

    # --- networks -----------------------------------------------------------------

    async def create(
        self, request: NetworkCreate, project: str = DEFAULT_PROJECT, *, tenant: bool = False
    ) -> NetworkView:
        """Create a network in ``project``: bridge, dnsmasq, rules. Nothing is left when
        a step fails. ``tenant``: asked by a project's token, which may use only the
        uplinks the host administrator allowed that project."""
        async with self._lock:
            host = await asyncio.to_thread(self.links.interfaces)
            existing = self.repo.all()
            own = {n.subnet for n in existing if n.subnet}
            config = resolve_network(
                request,
                network_id=uuid.uuid4().hex,
                project=project,
                existing=existing,
                host_subnets=links.host_subnets(host, own),
                host_interfaces=host.names,
                host_bridges=host.bridges,
                allowed_uplinks=self.uplinks_of(project) if tenant else None,
            )
            async with revert_on_error() as undo:
                self.repo.insert(config)
                undo.push("delete network row", lambda: self.repo.delete(config.id))
                # Cleanups run in a worker thread too: pyroute2's synchronous
                # IPRoute cannot run on a thread whose event loop is running.
                undo.push(
                    "remove bridge and dnsmasq", lambda: asyncio.to_thread(self._tear_down, config)
                )
                await asyncio.to_thread(self._bring_up, config, [])
                undo.push(
                    "re-apply rules",
                    lambda: asyncio.to_thread(lambda: self._apply_rules(self._state())),
                )
                await asyncio.to_thread(self._apply_rules, self._state())
        self._publish("created", config)
        return self.get(config.name, project)

    async def delete(self, name: str, project: str = DEFAULT_PROJECT) -> None:
        """Delete a network with no VM on it: its bridge, dnsmasq, forwards and rules."""
        async with self._lock:
            net = self.repo.get(name, project)
            users = sorted({n.vm for n in self._attached() if n.network_id == net.id})
            if users:
                raise Conflict(
                    f"network '{name}' is in use by VM{'s' if len(users) > 1 else ''} "
                    + ", ".join(users),
                    hint="delete those VMs first",
                    details={"vms": users},
                )
            self.repo.delete(net.id)
            for other in self.repo.in_project(project):
                if name in other.peers:
                    peers = tuple(p for p in other.peers if p != name)
                    self.repo.set_config(other.model_copy(update={"peers": peers}))
            await asyncio.to_thread(self._apply_rules, self._state())
            await asyncio.to_thread(self._tear_down, net)
        self._publish("deleted", net)

    async def peer(
        self, name: str, other: str, *, peered: bool = True, project: str = DEFAULT_PROJECT
    ) -> NetworkView:
        """Let the guests of two managed networks of ``project`` reach each other (or
        stop them). Networks of two projects are never peered."""
        async with self._lock:
            a, b = self.repo.get(name, project), self.repo.get(other, project)
            if a.name == b.name:
                raise InvalidInput("a network cannot be peered with itself", hint="name two")
            for net in (a, b):
                if not net.managed:
                    raise InvalidInput(
                        f"network '{net.name}' is bridged: hangar does not route it",
                        hint="peer nat or isolated networks",
                    )
            for net, peer in ((a, b), (b, a)):
                peers = set(net.peers) | {peer.name} if peered else set(net.peers) - {peer.name}
                self.repo.set_config(net.model_copy(update={"peers": tuple(sorted(peers))}))
            await asyncio.to_thread(self._apply_rules, self._state())
        return self.get(name, project)

    # --- VMs ----------------------------------------------------------------------

    def prepare_vm(self, config: VMConfig, project: str = DEFAULT_PROJECT) -> VMConfig:
        """Check a new VM's networks exist in ``project`` and give each network NIC its
        address. Call it under the project's lock (addresses are taken per network, and
        a network's VMs are all of its project).

        Raises before anything is created: unknown network, bad or taken --ip.
        """
        used: dict[str, set[str]] = {}
        # Not the VM's own NICs: preparing a VM again (a NIC attached) keeps its addresses.
        for attached in self._attached(without_vm=config.id):
            if attached.ip:
                used.setdefault(attached.network_id, set()).add(attached.ip)
        nics: list[NicConfig] = []
        seen: set[str] = set()
        for nic in config.nics:
            if nic.type != "network" or nic.network is None:
                nics.append(nic)
                continue
            net = self.repo.get(nic.network, project)
            if net.id in seen:
                raise InvalidInput(
                    f"VM '{config.name}' is attached to network '{net.name}' twice",
                    hint="attach the VM to each network once",
                )
            seen.add(net.id)
            if not net.managed:
                if nic.ip:
                    raise InvalidInput(
                        f"network '{net.name}' is bridged: addresses come from its LAN",
                        hint="give no address for a bridged network",
                    )
                nics.append(nic)
                continue
            ip = allocate_ip(net, used.get(net.id, set()), nic.ip)
            used.setdefault(net.id, set()).add(ip)
            nics.append(nic.model_copy(update={"ip": ip}))
        return config.model_copy(update={"nics": tuple(nics)})

    async def attach_vm(self, config: VMConfig, project: str = DEFAULT_PROJECT) -> None:
        """Make the VM's taps and add it to DHCP, DNS and the rules. Idempotent."""
        if not any(n.type == "network" for n in config.nics):
            return

        def work() -> None:
            state = self._state()
            mine = {n.name: n for n in state.networks if n.project == project}
            for nic in config.nics:
                if nic.type == "network" and nic.network and nic.tap:
                    if nic.network not in mine:
                        raise NotFound(
                            f"network '{nic.network}' of VM '{config.name}' no longer exists",
                            hint="recreate the network, or delete the VM",
                        )
                    self.links.ensure_tap(nic.tap, mine[nic.network].bridge)
            for net in state.networks:
                if net.managed:
                    self._write_dnsmasq(net, list(state.nics))
            self._apply_rules(state)

        await self._locked(work)

    async def detach_vm(self, config: VMConfig) -> None:
        """Remove the VM's taps, reservations, names, forwards and firewall rules."""

        def work() -> None:
            self.repo.delete_for_vm(config.id)
            if not any(n.type == "network" for n in config.nics):
                return
            state = self._state(without_vm=config.id)
            for net in state.networks:
                if net.managed:
                    self._write_dnsmasq(net, list(state.nics))
            self._apply_rules(state)
            for nic in config.nics:
                if nic.tap:
                    self.links.remove_link(nic.tap)

        await self._locked(work)

    async def detach_nics(
        self, config: VMConfig, nics: list[NicConfig], project: str = DEFAULT_PROJECT
    ) -> None:
        """Take some NICs of a stopped VM off their networks (the VM stays)."""
        taps = frozenset(n.tap for n in nics if n.tap)
        names = {n.network for n in nics if n.network}

        def work() -> None:
            ids = {n.id for n in self.repo.in_project(project) if n.name in names}
            for row in self.repo.forwards():
                if row.vm_id == config.id and row.network_id in ids:
                    self.repo.delete_forward(row.id)
            state = self._state(without_taps=taps)
            for net in state.networks:
                if net.managed:
                    self._write_dnsmasq(net, list(state.nics))
            self._apply_rules(state)
            for tap in taps:
                self.links.remove_link(tap)

        await self._locked(work)

    # --- forwards -----------------------------------------------------------------

    async def add_forward(
        self, network: str, spec: ForwardCreate, project: str = DEFAULT_PROJECT
    ) -> Forward:
        """Forward a host port to ``spec.vm`` on ``network`` (both of ``project``).

        Host ports are the host's: one forwarded by another project is taken too
        (the error does not say by whom)."""
        async with self._lock:
            net = self.repo.get(network, project)
            if net.type != "nat":
                raise InvalidInput(
                    f"network '{network}' is {net.type}: only nat networks have port forwards",
                    hint="forward to a VM on a nat network",
                )
            check_host_address(spec.host_address)
            vm = self.vms.get(spec.vm, project)  # NotFound when there is no such VM
            nics = self._attached()
            ip = next((n.ip for n in nics if n.vm_id == vm.id and n.network_id == net.id), None)
            if ip is None:
                raise InvalidInput(
                    f"VM '{spec.vm}' has no NIC on network '{network}'",
                    hint=f"attach the VM to network '{network}' first",
                )
            for other in self._forwards(nics):
                same_addr = "0.0.0.0" in (other.host_address, spec.host_address) or (
                    other.host_address == spec.host_address
                )
                if (
                    other.protocol == spec.protocol
                    and other.host_port == spec.host_port
                    and same_addr
                ):
                    whom = (
                        f"to {other.vm}:{other.vm_port} (forward {other.id})"
                        if other.project == project
                        else "by another project"
                    )
                    raise Conflict(
                        f"host port {spec.host_port}/{spec.protocol} is already forwarded {whom}",
                        hint="pick another host port"
                        + (", or delete that forward" if other.project == project else ""),
                    )
            forward_id = self.repo.add_forward(net, vm.id, spec)
            try:
                await asyncio.to_thread(self._apply_rules, self._state())
            except BaseException:
                self.repo.delete_forward(forward_id)
                raise
            return Forward(
                id=forward_id, project=project, network=net.name, vm_ip=ip, **spec.model_dump()
            )

    def forwards(self, network: str | None = None, project: str = DEFAULT_PROJECT) -> list[Forward]:
        """``project``'s forwards (of one of its networks when ``network`` is given)."""
        if network is not None:
            self.repo.get(network, project)
        return [
            f
            for f in self._forwards(self._attached())
            if f.project == project and network in (None, f.network)
        ]

    async def delete_forward(self, forward_id: int, project: str = DEFAULT_PROJECT) -> None:
        async with self._lock:
            mine = {n.id for n in self.repo.in_project(project)}
            if not any(f.id == forward_id and f.network_id in mine for f in self.repo.forwards()):
                raise NotFound(
                    f"no forward with id {forward_id} in project '{project}'",
                    hint="list the forwards to see their ids",
                    action=NextStep.LIST_FORWARDS,
                )
            self.repo.delete_forward(forward_id)
            await asyncio.to_thread(self._apply_rules, self._state())

    # --- firewall rules -------------------------------------------------------------

    async def add_rule(
        self, spec: FirewallRuleCreate, project: str = DEFAULT_PROJECT
    ) -> FirewallRule:
        """Add a rule to ``spec.vm`` of ``project``."""
        async with self._lock:
            if spec.port is not None and spec.protocol not in ("tcp", "udp"):
                raise InvalidInput(
                    "a firewall rule with a port needs protocol tcp or udp",
                    hint="give protocol tcp (or udp)",
                )
            if spec.cidr is not None:
                spec = spec.model_copy(update={"cidr": check_cidr(spec.cidr)})
            record = self.vms.get(spec.vm, project)
            if not any(n.type == "network" and n.ip for n in record.config.nics):
                raise InvalidInput(
                    f"VM '{spec.vm}' has no NIC on a nat or isolated network",
                    hint="firewall rules apply to VMs on hangar's managed networks",
                )
            rule_id = self.repo.add_rule(record.id, spec)
            try:
                await asyncio.to_thread(self._apply_rules, self._state())
            except BaseException:
                self.repo.delete_rule(rule_id)
                raise
            return FirewallRule(id=rule_id, project=project, vm_id=record.id, **spec.model_dump())

    def rules(self, vm: str | None = None, project: str = DEFAULT_PROJECT) -> list[FirewallRule]:
        """``project``'s firewall rules (of one of its VMs when ``vm`` is given)."""
        if vm is not None:
            self.vms.get(vm, project)
        return [r for r in self.repo.rules(project) if vm in (None, r.vm)]

    async def delete_rule(self, rule_id: int, project: str = DEFAULT_PROJECT) -> None:
        async with self._lock:
            if not any(r.id == rule_id for r in self.repo.rules(project)):
                raise NotFound(
                    f"no firewall rule with id {rule_id} in project '{project}'",
                    hint="list the firewall rules to see their ids",
                    action=NextStep.LIST_FIREWALL,
                )
            self.repo.delete_rule(rule_id)
            await asyncio.to_thread(self._apply_rules, self._state())
