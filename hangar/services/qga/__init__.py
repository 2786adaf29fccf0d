"""qemu-guest-agent: the client hangard uses to reach inside a guest."""
