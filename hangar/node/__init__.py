"""Where VMs run: the :class:`~hangar.node.base.Node` interface and this host's
implementation, :class:`~hangar.node.local.LocalNode`."""
