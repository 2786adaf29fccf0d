"""A resumed warm guest becomes a distinct machine: new hostname, machine-id, MAC (as
the guest sees it), DHCP lease and, where it runs sshd, SSH host keys.

Two ways in, by what the image offers:

* the tiny image's ``hangar-identity`` hook, typed on the serial console;
* identity.pl (cloud images such as debian-12), with what the host made (SSH host
  keys, randomness, the clock): saved waiting on hangar's own virtio-serial port, so
  a launch writes to a socket and nothing else; in templates saved before VMs had
  that port, waiting on a FIFO that the agent writes; else started by the agent.

The migration stream carries the virtio-net device's MAC, so the guest keeps the
saved one until it is told: both ways set the new MAC inside the guest.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from hangar.errors import HangarError, QemuFailed
from hangar.host.sockets import open_unix_connection
from hangar.services.qemu.argv import IDENTITY_PORT, VMFiles
from hangar.services.qga.agent import (
    ExecResult,
    GuestAgent,
    file_exists,
    reply_object,
    wait_exec,
    write_file,
)

log = logging.getLogger(__name__)

IDENTITY_TIMEOUT = 60.0  # TCG on a loaded host: a DHCP exchange can take seconds
DONE = "HANGAR-IDENTITY-DONE"
# identity.pl runs in the guest (perl -e): one process that does it all with system
# calls, because every program started in a just-resumed guest costs tens of
# milliseconds under TCG (the shell script it replaced took 8 s).
AGENT_SCRIPT = (Path(__file__).parent / "identity.pl").read_text()
AGENT_POLL = 0.02  # guest-exec-status: the script takes a few hundred milliseconds
# The waiting script's folder (tmpfs, root's alone): the FIFO it reads, and the file
# that says it is ready.
LISTENER_DIR = "/run/hangar-identity"
REQUEST = f"{LISTENER_DIR}/request"
READY = f"{LISTENER_DIR}/ready"
LISTENER_TIMEOUT = 60.0
SSH_DIR = "/etc/ssh"
HOST_KEY_NAMES = r"^ssh_host_.*_key(\.pub)?$"


@dataclass(frozen=True)
class GuestFile:
    path: str
    mode: int
    content: bytes


def _new_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


class HostKeyMaker:
    """New SSH host keys for each warm launch, of the three types Debian's cloud-init
    makes, generated on the host: seconds of guest CPU under TCG, milliseconds here.

    An RSA key still takes 0.1-0.4 s, longer than a warm guest takes to resume, so a
    few are made ahead in a background thread (OpenSSL lets go of the GIL), kept in
    memory only and each handed out once. Ed25519 and ECDSA keys are made on demand.
    """

    def __init__(self, spare: int = 2) -> None:
        self.spare = spare
        self._rsa: list[rsa.RSAPrivateKey] = []
        self._lock = threading.Lock()
        self._filling = False

    def make(self, hostname: str) -> list[GuestFile]:
        """The key files for a guest called ``hostname``. Blocking (a thread, while the
        guest resumes); starts refilling the spare RSA keys."""
        with self._lock:
            spare = self._rsa.pop() if self._rsa else None
        keys: dict[str, PrivateKeyTypes] = {
            "rsa": spare or _new_rsa(),
            "ecdsa": ec.generate_private_key(ec.SECP256R1()),
            "ed25519": ed25519.Ed25519PrivateKey.generate(),
        }
        self.fill()
        files = []
        for kind, key in keys.items():
            path = f"{SSH_DIR}/ssh_host_{kind}_key"
            private = openssh_private(key)
            public = key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            files.append(GuestFile(path, 0o600, private))
            files.append(GuestFile(f"{path}.pub", 0o644, public + f" root@{hostname}\n".encode()))
        return files

    def fill(self) -> None:
        """Make spare RSA keys in the background, unless there are enough or it is
        under way."""
        with self._lock:
            if self._filling or len(self._rsa) >= self.spare:
                return
            self._filling = True
        threading.Thread(target=self._fill, name="hangar-host-keys", daemon=True).start()

    def ready(self) -> int:
        """How many spare RSA keys there are."""
        with self._lock:
            return len(self._rsa)

    def _fill(self) -> None:
        try:
            while True:
                with self._lock:
                    if len(self._rsa) >= self.spare:
                        return
                key = _new_rsa()
                with self._lock:
                    self._rsa.append(key)
        finally:
            with self._lock:
                self._filling = False


def agent_input(
    *,
    name: str,
    saved_mac: str,
    mac: str,
    machine_id: str | None,
    seed: bytes,
    now_ns: int | None,
    files: list[GuestFile],
    root: str | None = None,
    wait: float | None = None,
    again: bool = False,
) -> bytes:
    """identity.pl's standard input: records "NAME LENGTH\\n" + bytes + "\\n". Pure.
    ``now_ns`` None leaves the clock alone, ``machine_id`` None the machine-id;
    ``again``: the script then waits on its port for more input (a standby VM);
    ``root`` stands for / and ``wait`` bounds the wait for a lease (seconds; tests)."""
    records: list[tuple[str, bytes]] = [("seed", seed)]
    if again:
        records.append(("again", b""))
    if now_ns is not None:
        records.append(("time", f"{now_ns // 10**9} {now_ns % 10**9}".encode()))
    if root is not None:
        records.append(("root", root.encode()))
    if wait is not None:
        records.append(("wait", f"{wait:g}".encode()))
    records += [
        ("name", name.encode()),
        ("old", saved_mac.encode()),
        ("new", mac.encode()),
    ]
    if machine_id is not None:
        records.append(("machine-id", machine_id.encode()))
    if files:
        records.append((f"drop:{SSH_DIR}", HOST_KEY_NAMES.encode()))
    records += [(f"file:{f.path}", b"%04o " % f.mode + f.content) for f in files]
    out = bytearray()
    for key, value in records:
        if " " in key or "\n" in key:
            raise ValueError(f"bad record name {key!r}")
        out += f"{key} {len(value)}\n".encode() + value + b"\n"
    return bytes(out)


async def by_console(files: VMFiles, name: str, mac: str, machine_id: str) -> None:
    """The tiny image's hook; raise :class:`QemuFailed` if the guest does not confirm
    within :data:`IDENTITY_TIMEOUT` seconds."""
    token = uuid.uuid4().hex[:12]
    try:
        reader, writer = await open_unix_connection(files.console_socket)
    except OSError as exc:
        raise QemuFailed(f"cannot reach the guest's serial console: {exc}") from exc
    try:
        # Ctrl-U first: whatever was half-typed at the saved prompt is dropped.
        # The seed: host randomness the guest reseeds its kernel's CRNG from (clones
        # of one saved guest share its random state; microvm has no vmgenid).
        seed = secrets.token_hex(32)
        line = f"\x15hangar-identity {name} {mac} {machine_id} {token} {seed}\n"
        writer.write(line.encode())
        await writer.drain()
        seen = b""
        want = f"{DONE} {token}".encode()
        async with asyncio.timeout(IDENTITY_TIMEOUT):
            while want not in seen:
                chunk = await reader.read(4096)
                if not chunk:
                    raise QemuFailed("the serial console closed before the guest answered")
                seen = seen[-4096:] + chunk
    except TimeoutError as exc:
        raise QemuFailed(
            f"the guest did not confirm its new identity in {IDENTITY_TIMEOUT:g} s",
            hint="a warm template needs an image with the hangar-identity hook (tiny) "
            "or qemu-guest-agent",
        ) from exc
    finally:
        writer.close()


async def by_agent(
    agent: GuestAgent,
    name: str,
    saved_mac: str,
    mac: str,
    machine_id: str,
    files: list[GuestFile],
    *,
    listener: int | None = None,
    port: IdentityPort | None = None,
    again: bool = False,
) -> str:
    """:data:`AGENT_SCRIPT` in the guest with the host's randomness, clock, and
    ``files`` (see :class:`HostKeyMaker`). Returns what it printed ("NIC ADDRESS").

    ``listener``: the guest pid of the script saved waiting with the template (see
    :func:`start_listener`); it gets the input through the identity ``port``
    (connected) when it waits there, else through its FIFO, which the agent writes.
    Without it the agent starts the script (a few hundred milliseconds more under TCG).
    ``again`` (with ``port``): the script then waits for a :func:`rename` (a standby
    VM). Raise :class:`QemuFailed` if it fails or cannot be reached."""

    def data() -> bytes:  # made at the last moment: it carries the host's clock
        return agent_input(
            name=name,
            saved_mac=saved_mac,
            mac=mac,
            machine_id=machine_id,
            seed=os.urandom(64),
            now_ns=time.time_ns(),
            files=files,
            again=again and port is not None,
        )

    try:
        if port is not None:
            ran = await _over_port(port, data)
        elif listener is not None:
            ran = await _hand_over(agent, listener, data)
        else:
            ran = await agent.exec(
                ["perl", "-e", AGENT_SCRIPT],
                input_data=data(),
                timeout=IDENTITY_TIMEOUT,
                poll=AGENT_POLL,
            )
    except HangarError as exc:
        raise QemuFailed(
            f"could not give the guest its new identity: {exc.message}",
            hint="a warm template of a cloud image needs qemu-guest-agent and perl in it",
        ) from exc
    return _printed(ran, "the identity script failed in the guest")


def _printed(ran: ExecResult, failure: str) -> str:
    """What the identity script printed ("NIC ADDRESS"), or :class:`QemuFailed` saying
    ``failure`` and why when it did not succeed."""
    if ran.exit_code != 0:
        raise QemuFailed(
            f"{failure} (exit {ran.exit_code}): {ran.stderr.strip() or ran.stdout.strip()}",
            hint="see the guest's journal",
        )
    return ran.stdout.strip()


def openssh_private(key: PrivateKeyTypes) -> bytes:
    """``key`` as an unencrypted OpenSSH private key file."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


async def rename(port: IdentityPort, name: str, mac: str) -> str:
    """Give a standby VM's guest, whose script waits on its identity ``port`` after a
    first identity (``by_agent(..., again=True)``), its final ``name``: its MAC,
    machine-id, host keys, lease and clock stay. Returns "NIC ADDRESS"; raise
    :class:`QemuFailed` if it fails."""

    def data() -> bytes:
        return agent_input(
            name=name,
            saved_mac=mac,
            mac=mac,
            machine_id=None,
            seed=os.urandom(32),
            now_ns=None,
            files=[],
        )

    return _printed(await _over_port(port, data), f"the guest could not take the name '{name}'")


class IdentityPort:
    """hangard's end of a VM's identity port: a connection to QEMU's socket for it.

    The guest's driver tells the waiting script whether the host end is connected.
    A template is saved with hangard connected (the script then waits in a plain
    read) and a launch connects before the guest runs, so the resumed guest sees no
    change: the input alone wakes it, with no event and no signal to handle first.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, socket: Path) -> IdentityPort:
        try:
            reader, writer = await open_unix_connection(socket)
        except OSError as exc:
            raise QemuFailed(f"cannot reach the guest's identity port: {exc}") from exc
        return cls(reader, writer)

    async def exchange(self, data: Callable[[], bytes]) -> str:
        """Send "LENGTH\\n" + input; the answer's line."""
        try:
            payload = data()
            self._writer.write(b"%d\n" % len(payload) + payload)
            await self._writer.drain()
            async with asyncio.timeout(IDENTITY_TIMEOUT):
                line = await self._reader.readline()
        except TimeoutError as exc:
            raise QemuFailed(
                f"the guest's identity script did not answer in {IDENTITY_TIMEOUT:g} s"
            ) from exc
        except OSError as exc:
            raise QemuFailed(f"the guest's identity port failed: {exc}") from exc
        if not line.endswith(b"\n"):
            raise QemuFailed("the guest's identity port closed before the script answered")
        return line.decode(errors="replace").strip()

    def close(self) -> None:
        self._writer.close()


async def _over_port(port: IdentityPort, data: Callable[[], bytes]) -> ExecResult:
    """Write the input to the script waiting on the identity port and read its answer
    ("ok NIC ADDRESS STEPS" or "fail CODE MESSAGE"), as if the agent had run it: no
    agent call, so no program in the guest but the script wakes up."""
    answer = await port.exchange(data)
    status, _, rest = answer.partition(" ")
    if status == "ok":
        nic, address, steps = [*rest.split(), "", "", ""][:3]
        log.info("identity of %s %s: %s (ms from the input)", nic, address, steps)
        return ExecResult(exit_code=0, stdout=f"{nic} {address}\n", stderr="")
    code, _, message = rest.partition(" ")
    if status == "fail" and code.isdigit():
        return ExecResult(exit_code=int(code), stdout="", stderr=message)
    raise QemuFailed(f"the identity script answered {answer!r}")


async def _hand_over(agent: GuestAgent, listener: int, data: Callable[[], bytes]) -> ExecResult:
    """Write the input into the waiting script's FIFO and wait for it to end, on one
    agent connection (each new one costs a sync with the guest)."""
    async with agent.session() as session:
        await write_file(session, REQUEST, data())
        return await wait_exec(
            session, listener, "identity", timeout=IDENTITY_TIMEOUT, poll=AGENT_POLL
        )


# systemd-networkd's DHCP client id is by default derived from the machine-id it read
# when it started: every VM resumed from one template would send the source's, and a
# DHCP server that keys its leases on it (dnsmasq, a LAN's router on a bridged NIC)
# would hand them one address. With ClientIdentifier=mac it follows the MAC that
# identity.pl sets. A drop-in in /run: the guest's next boot forgets it (and starts
# networkd with the guest's own machine-id).
CLIENT_ID_DROPIN = "hangar-warm-client-id.conf"
_CLIENT_ID_ON = """
for f in /etc/systemd/network/*.network /run/systemd/network/*.network; do
    [ -f "$f" ] || continue
    d=/run/systemd/network/${f##*/}.d
    mkdir -p "$d" && printf '[DHCPv4]\\nClientIdentifier=mac\\n' > "$d/DROPIN"
done
networkctl reload
"""
_CLIENT_ID_OFF = "rm -f /run/systemd/network/*.network.d/DROPIN; networkctl reload"


async def mac_client_id(agent: GuestAgent, *, on: bool) -> None:
    """Make networkd's DHCP client id the NIC's MAC (``on``), in a guest about to be
    saved as a warm template, or undo it in that guest once saved. Raise
    :class:`QemuFailed` if the guest cannot (no networkd)."""
    script = (_CLIENT_ID_ON if on else _CLIENT_ID_OFF).replace("DROPIN", CLIENT_ID_DROPIN)
    ran = await agent.exec(["sh", "-c", script], timeout=LISTENER_TIMEOUT)
    if ran.exit_code != 0:
        raise QemuFailed(
            f"setting networkd's DHCP client id failed (exit {ran.exit_code}): {ran.stderr.strip()}"
        )


async def start_listener(agent: GuestAgent, *, port: bool) -> int:
    """Start :data:`AGENT_SCRIPT` waiting in a guest about to be saved as a warm
    template: on the identity port when the VM has one (``port``), else on a FIFO;
    its guest pid once it waits. Raise :class:`QemuFailed` if it cannot (no perl,
    say): the template then works without it."""
    mode = ["--port", IDENTITY_PORT] if port else ["--wait"]
    pid = await agent.spawn(["perl", "-e", AGENT_SCRIPT, "--", *mode, LISTENER_DIR])
    deadline = time.monotonic() + LISTENER_TIMEOUT
    while not await file_exists(agent, READY):
        reply = await agent.call("guest-exec-status", {"pid": pid})
        status = reply_object(reply, "guest-exec-status", agent.name)
        if status.get("exited"):
            ended = ExecResult.of(status)
            raise QemuFailed(
                f"the identity script ended at once (exit {ended.exit_code}): "
                f"{ended.stderr.strip()}"
            )
        if time.monotonic() > deadline:
            raise QemuFailed(f"the identity script did not get ready in {LISTENER_TIMEOUT:g} s")
        await asyncio.sleep(0.05)
    return pid


async def stop_listener(agent: GuestAgent, pid: int, port: IdentityPort | None = None) -> None:
    """End the waiting script in the VM the template was saved from: it has nothing to
    do there. Only if it still runs (a FIFO without its reader would block the agent).
    ``port``: the identity port (connected), when it waits there."""
    reply = await agent.call("guest-exec-status", {"pid": pid})
    status = reply_object(reply, "guest-exec-status", agent.name)
    if not status.get("exited"):
        cancel = b"cancel 0\n\n"
        if port is not None:
            answer = await port.exchange(lambda: cancel)
            if answer != "cancelled":
                raise QemuFailed(f"the identity script answered {answer!r} to cancel")
        else:
            await write_file(agent, REQUEST, cancel)
        await agent.wait_exec(pid, "identity", timeout=LISTENER_TIMEOUT)
