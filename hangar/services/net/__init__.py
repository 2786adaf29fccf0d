"""Host-side networking: bridges and taps, dnsmasq, nftables.

Each concern is split in two: a pure renderer (golden-tested text from specs)
and a small impure part that applies the text to the host idempotently.
"""
