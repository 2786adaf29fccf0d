"""Which warm templates can keep standby VMs, and which launches a standby VM serves."""

from __future__ import annotations

from hangar.services.templates.standby import _claimed, can_stand_by, fits, unfit_source
from hangar.spec.image import WarmState
from hangar.spec.vm import CloudInit, NicConfig, NicCreate, PortForward, VMConfig, VMCreate
from tests.support.factories import warm_state

K2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK2 me@host"


def _source(**update: object) -> VMConfig:
    return warm_state(**update).config


def _warm(config: VMConfig, listener: int | None = 812) -> WarmState:
    return WarmState(memory="state.bin", ram="ram.img", listener=listener, config=config)


def test_only_guests_waiting_on_the_identity_port_with_user_nics_can_stand_by() -> None:
    assert unfit_source(_source()) is None
    assert can_stand_by(_warm(_source())) is None
    assert "identity port" in (unfit_source(_source(agent=False)) or "")
    assert "identity port" in (unfit_source(_source(identity_channel=False)) or "")
    network = NicConfig(type="network", mac="52:54:00:00:00:01", forwards=(), network="lan")
    assert "user-mode" in (unfit_source(_source(nics=(network,))) or "")
    assert "user-mode" in (unfit_source(_source(nics=())) or "")
    # Saved without its waiting script: nothing would answer a claim.
    assert "did not start" in (can_stand_by(_warm(_source(), listener=None)) or "")


def test_a_standby_serves_launches_that_ask_for_a_name_only() -> None:
    warm = _warm(_source())
    assert fits(VMCreate(name="web", image="t"), warm)
    assert fits(VMCreate(name="web", image="t", ssh_keys=(K2,)), warm)
    assert fits(VMCreate(name="web", image="t", disk=warm.config.disk_size), warm)
    assert not fits(VMCreate(name="web", image="t", disk=warm.config.disk_size * 2), warm)
    forward = PortForward(host_port=8080, guest_port=80)
    assert fits(VMCreate(name="web", image="t", nics=(NicCreate(forwards=(forward,)),)), warm)
    assert fits(VMCreate(name="web", image="t", nics=(NicCreate(),)), warm)
    # A standby VM forwards a port of its own to sshd: not the caller's.
    ssh = PortForward(host_port=2222, guest_port=22)
    assert not fits(VMCreate(name="web", image="t", nics=(NicCreate(forwards=(ssh,)),)), warm)


def test_a_claimed_config_changes_the_name_and_cloud_init_settings_only() -> None:
    seeded = _source(cloud_init=CloudInit(hostname="standby-1", user="debian", ssh_keys=("k1",)))
    claimed = _claimed(seeded, VMCreate(name="web", image="t", ssh_keys=(K2,)))
    assert claimed.name == "web"
    assert claimed.cloud_init is not None and seeded.cloud_init is not None
    assert (claimed.cloud_init.hostname, claimed.cloud_init.ssh_keys) == ("web", (K2,))
    assert claimed.model_copy(update={"name": "src", "cloud_init": seeded.cloud_init}) == seeded
    # No keys asked for: none, never the template's (issue 14: a launch inherited them).
    kept = _claimed(seeded, VMCreate(name="web", image="t"))
    assert kept.cloud_init is not None and kept.cloud_init.ssh_keys == ()


def test_a_claimed_config_adds_the_asked_forwards_after_its_own() -> None:
    own = PortForward(host_port=40022, guest_port=22)
    nic = _source().nics[0]
    seeded = _source(nics=(nic.model_copy(update={"forwards": (own,)}),))
    web = PortForward(host_port=8080, guest_port=80)
    claimed = _claimed(seeded, VMCreate(name="web", image="t", nics=(NicCreate(forwards=(web,)),)))
    assert claimed.nics[0].forwards == (own, web)
    assert _claimed(seeded, VMCreate(name="web", image="t")).nics == seeded.nics


def test_the_cli_mirrors_the_standby_limit() -> None:
    from hangar.cli import storage as cli_storage
    from hangar.spec.image import MAX_STANDBY

    assert cli_storage.MAX_STANDBY == MAX_STANDBY
