"""A template's manifest from its source VM's config (services/templates/manifest.py),
cold and warm alike, and what its recipe_hash means: what it was captured from, never
a random value, never a recipe's. Pure."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from hangar.services.templates.manifest import (
    HASH_TAG,
    template_hash,
    template_manifest,
    without_secrets,
)
from hangar.spec.resolve import resolve
from hangar.spec.vm import CloudInit, VMConfig, VMCreate
from tests.support.factories import debian_manifest, host_facts, tiny_manifest, warm_state

MOMENT = datetime(2026, 12, 4, 3, 40, 12, 345678, tzinfo=UTC)


def _config(**changes: object) -> VMConfig:
    source = resolve(
        VMCreate(name="src", image="tiny", cpus=2, memory=384 * 1024**2),
        tiny_manifest(),
        host_facts(),
        vm_id="a" * 32,
        kernel_path="/var/lib/hangar/vms/aaaa/vmlinux-1234",
        initrd_path="/var/lib/hangar/vms/aaaa/initrd-1234.img",
    )
    return source.model_copy(update=changes)


def test_a_cold_template_describes_its_source_vm() -> None:
    config = _config()
    manifest = template_manifest(
        config, "tpl", made_at=MOMENT, disk="disk.qcow2", description="d", firmware=("bios",)
    )
    assert (manifest.name, manifest.origin, manifest.disk) == ("tpl", "publish", "disk.qcow2")
    assert (manifest.kernel, manifest.initrd) == ("vmlinux-1234", "initrd-1234.img")
    assert config.boot is not None and manifest.cmdline == config.boot.cmdline
    assert manifest.created_at == "2026-12-04T03:40:12+00:00"
    assert manifest.disk_virtual_size == config.disk_size
    assert manifest.boot_marker == config.boot_marker
    defaults = manifest.defaults
    assert (defaults.cpus, defaults.memory, defaults.disk) == (2, 384 * 1024**2, config.disk_size)
    assert (defaults.nics, defaults.machine) == (1, config.machine)
    assert manifest.firmware == ("bios",) and manifest.description == "d"
    assert manifest.warm is None and manifest.project is None
    assert not manifest.cloud_init and manifest.default_user == "" and not manifest.agent


def test_a_vm_without_a_kernel_makes_a_template_without_one() -> None:
    manifest = template_manifest(
        _config(boot=None), "tpl", made_at=MOMENT, disk="disk.qcow2", description=""
    )
    assert (manifest.kernel, manifest.initrd, manifest.cmdline) == (None, None, "")


def test_a_cloud_vm_makes_a_cloud_image_and_a_warm_one_keeps_its_guest() -> None:
    seed = CloudInit(hostname="src", user="debian", ssh_keys=("ssh-ed25519 AAAA me",))
    config = _config(cloud_init=seed, agent=True)
    warm = warm_state()
    manifest = template_manifest(
        config, "tw", made_at=MOMENT, disk="disk.qcow2", description="", warm=warm, project="team"
    )
    assert manifest.cloud_init and manifest.default_user == "debian" and manifest.agent
    assert manifest.warm == warm and manifest.project == "team"
    assert debian_manifest().cloud_init  # the flag a cloud image has


def test_the_hash_is_what_the_template_was_made_from() -> None:
    config = _config()
    first = template_hash("cold", config, MOMENT)
    assert first == template_hash("cold", config, MOMENT)  # no randomness
    assert len(first) == 64 and int(first, 16) >= 0
    others = {
        template_hash("warm", config, MOMENT),
        template_hash("cold", config, MOMENT + timedelta(microseconds=1)),
        template_hash("cold", config.model_copy(update={"id": "b" * 32}), MOMENT),
        template_hash("cold", config.model_copy(update={"cpus": 1}), MOMENT),
    }
    assert first not in others and len(others) == 4
    manifest = template_manifest(config, "t", made_at=MOMENT, disk="d.qcow2", description="")
    assert manifest.recipe_hash == first
    warm = template_manifest(
        config, "t", made_at=MOMENT, disk="d.qcow2", description="", warm=warm_state()
    )
    assert warm.recipe_hash == template_hash("warm", config, MOMENT)


def test_the_hash_leaves_the_source_vms_secrets_out() -> None:
    # Every viewer reads it: a guess at the user-data must not be checkable against it.
    plain = _config(cloud_init=CloudInit(hostname="src", user="debian"))
    assert plain.cloud_init is not None
    secret = plain.cloud_init.model_copy(
        update={"ssh_keys": ("ssh-ed25519 AAAA me",), "user_data": "#cloud-config\npw: x\n"}
    )
    with_secrets = plain.model_copy(update={"cloud_init": secret})
    assert template_hash("cold", with_secrets, MOMENT) == template_hash("cold", plain, MOMENT)
    assert without_secrets(with_secrets) == plain


def test_a_templates_hash_is_never_a_recipes() -> None:
    # A recipe's input starts with its settings ("tiny …", "debian-12 …"); a
    # template's with the tag, which no recipe's does.
    assert not HASH_TAG.startswith(("tiny", "debian-12"))
    config = _config()
    expected = hashlib.sha256()
    expected.update(f"{HASH_TAG}\ncold\n{config.id}\n{MOMENT.isoformat()}\n".encode())
    expected.update(without_secrets(config).model_dump_json().encode())
    assert template_hash("cold", config, MOMENT) == expected.hexdigest()
