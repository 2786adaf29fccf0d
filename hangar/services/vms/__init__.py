"""The VM service: lifecycle (lifecycle.py), NICs (devices.py), reconcile, consoles
and serial output (reconcile.py), over what they share (core.py)."""

from __future__ import annotations

from hangar.services.vms.core import (
    DEFAULT_STOP_TIMEOUT as DEFAULT_STOP_TIMEOUT,
)
from hangar.services.vms.core import StopResult as StopResult
from hangar.services.vms.core import VMView as VMView
from hangar.services.vms.devices import VMDevices
from hangar.services.vms.lifecycle import VMLifecycle
from hangar.services.vms.reconcile import VMReconcile
from hangar.services.vms.reconcile import _serial_stream as _serial_stream


class VMService(VMLifecycle, VMDevices, VMReconcile):
    """Create, run and change VMs: the use cases, each taking the VM's lock."""
