"""Templates as a concept of their own: images and templates (images.py), a
template's manifest made from a VM (manifest.py), warm templates (warm.py, ram.py,
settle.py), standby VMs (standby.py), a resumed guest's new identity (identity.py and
the guest-side identity.pl, warmup_sshd.sh, reseed.py and reseed.pl), and the use
cases that span them (service.py: launch, launch many, publish, delete)."""
