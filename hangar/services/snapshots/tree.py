"""The snapshot tree of one VM, as pure functions over its rows.

Each snapshot is one frozen qcow2 layer on top of its parent's; the VM's own
disk (the active overlay) sits on top of its *head*. A layer's *dependents* are
the layers directly on top of it: its children's, and the active overlay's when
it is the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hangar.state.snapshots import SnapshotRecord


@dataclass(frozen=True)
class Node:
    snapshot: SnapshotRecord
    depth: int
    children: tuple[str, ...]  # names, oldest first


def children_of(snaps: Sequence[SnapshotRecord], snapshot_id: str | None) -> list[SnapshotRecord]:
    return [s for s in snaps if s.parent == snapshot_id]


def ancestors(snaps: Sequence[SnapshotRecord], snapshot_id: str | None) -> list[str]:
    """``snapshot_id`` and its ancestors, nearest first ([] for None)."""
    by_id = {s.id: s for s in snaps}
    chain: list[str] = []
    current = snapshot_id
    while current is not None and current in by_id and current not in chain:
        chain.append(current)
        current = by_id[current].parent
    return chain


def walk(snaps: Sequence[SnapshotRecord]) -> list[Node]:
    """Every snapshot in tree order (parents before children, siblings oldest first)."""
    ordered: list[Node] = []

    def visit(parent: str | None, depth: int) -> None:
        for snap in children_of(snaps, parent):
            kids = tuple(c.name for c in children_of(snaps, snap.id))
            ordered.append(Node(snap, depth, kids))
            visit(snap.id, depth + 1)

    visit(None, 0)
    return ordered


@dataclass(frozen=True)
class DeletePlan:
    """What deleting a snapshot takes: the layers to merge it into, or why it cannot be."""

    merge_into_children: tuple[SnapshotRecord, ...]
    merge_into_vm_disk: bool
    refusal: str | None


def plan_delete(
    snaps: Sequence[SnapshotRecord], target: SnapshotRecord, head: str | None, vm_running: bool
) -> DeletePlan:
    """Deleting ``target`` merges its layer into every layer built directly on it (so
    their content stays the same). A running QEMU has the head's chain open and
    QEMU forbids other writers to it: merging into that chain needs the VM stopped."""
    kids = tuple(children_of(snaps, target.id))
    into_vm = head == target.id
    refusal = None
    if vm_running and target.id in ancestors(snaps, head):
        refusal = (
            f"the running VM's disk is built on snapshot '{target.name}': merging it away "
            "needs the VM stopped"
        )
    return DeletePlan(kids, into_vm, refusal)
