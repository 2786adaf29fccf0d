"""Snapshots of VMs (disks, and RAM with device state), warm templates and forks."""
