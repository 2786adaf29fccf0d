"""Use cases that span images, warm templates and standby VMs, one method each.

Each used to be a sequence written in an API route (drain the standbys, delete,
refill on failure; publish warm, then set the standby count; warm or cold launch):
the web UI and the CLI would have had to repeat them. Here a route calls one method.
"""

from __future__ import annotations

from pydantic import BaseModel

from hangar.errors import Forbidden, HangarError, InvalidInput
from hangar.names import DEFAULT_PROJECT, check_name
from hangar.services.clones import CloneService
from hangar.services.operations import Operation, OperationManager
from hangar.services.templates.images import ImageService
from hangar.services.templates.standby import unfit_source
from hangar.services.templates.warm import WarmService
from hangar.services.transfer import TransferService
from hangar.services.undo import revert_on_error
from hangar.services.vms import VMService, VMView
from hangar.spec.vm import VMCreate

# The most VMs one launch makes (the CLI's --count allows as many).
MAX_LAUNCH = 1000


def many_names(name: str, count: int) -> list[str]:
    """The names of ``count`` VMs launched as ``name``: NAME-1 … NAME-N, or NAME alone
    for one. Raises :class:`InvalidInput` for a count out of range or a name that is
    not valid (NAME-N can be too long where NAME is not). Pure."""
    if not 1 <= count <= MAX_LAUNCH:
        raise InvalidInput(f"launch count {count}", hint=f"launch 1 to {MAX_LAUNCH} VMs at a time")
    names = [name] if count == 1 else [f"{name}-{i}" for i in range(1, count + 1)]
    for each in names:
        check_name(each)
    return names


class TemplateService:
    def __init__(
        self,
        vms: VMService,
        images: ImageService,
        transfer: TransferService,
        clones: CloneService,
        warm: WarmService,
        operations: OperationManager,
    ):
        self.vms = vms
        self.images = images
        self.transfer = transfer
        self.clones = clones
        self.warm = warm
        self.operations = operations

    async def launch(
        self,
        spec: VMCreate,
        *,
        start: bool = True,
        full: bool = False,
        cold: bool = False,
        project: str = DEFAULT_PROJECT,
    ) -> VMView:
        """Create (and start) a VM. From a warm template, unless ``cold`` or ``full``,
        it resumes the template's saved guest under a new identity instead of booting."""
        warm = spec.image is not None and self.warm.warm_state(spec.image, project)
        if start and not full and not cold and warm:
            return await self.warm.launch(spec, project=project)
        return await self.vms.create(spec, start=start, full=full, project=project)

    async def launch_many(
        self,
        spec: VMCreate,
        count: int,
        *,
        start: bool = True,
        full: bool = False,
        cold: bool = False,
        project: str = DEFAULT_PROJECT,
    ) -> list[VMView]:
        """``count`` VMs as :meth:`launch` makes them (warm or cold as it decides), named
        NAME-1 … NAME-N (one: NAME itself), one after the other, in that order.

        Refused before anything is made (:class:`InvalidInput`) when ``count`` is out
        of range, a name is not valid, or ``spec`` asks for what serves one VM only
        (host port forwards, fixed addresses). A launch that fails raises its error
        with ``details["launched"]``: the names of the VMs made before it, which stay,
        as they did when the CLI launched them one request at a time."""
        names = many_names(spec.name, count)
        if count > 1:
            nics = spec.nics or ()
            if any(nic.forwards for nic in nics):
                raise InvalidInput(
                    f"port forwards with a count of {count}",
                    hint="a host port serves only one VM: launch that one on its own",
                )
            if any(nic.ip for nic in nics):
                raise InvalidInput(
                    f"fixed addresses with a count of {count}",
                    hint="an address serves only one VM: launch that one on its own",
                )
        launched: list[VMView] = []
        for name in names:
            try:
                launched.append(
                    await self.launch(
                        spec.model_copy(update={"name": name}),
                        start=start,
                        full=full,
                        cold=cold,
                        project=project,
                    )
                )
            except HangarError as exc:
                exc.details.setdefault("launched", [vm.name for vm in launched])
                raise
        return launched

    async def delete_image(self, name: str, project: str, *, by_host: bool) -> None:
        """Delete an image or template. A shared one is the host administrator's
        (``by_host``); a project's own (a fork's template) its operators may delete.
        Its standby VMs, linked clones of it, go first, and come back if it stays."""
        if not by_host and self.images.get(name, project).project is None:
            raise Forbidden(
                f"image '{name}' is shared by every project: only the host administrator "
                "may delete it",
                hint="delete it on the host, through the local socket",
            )
        await self.warm.standby.drain(name)
        try:
            await self.transfer.delete_image(name)
        except BaseException:
            self.warm.standby.refill(name)
            raise

    def start_publish(
        self,
        vm: str,
        template: str,
        *,
        warm: bool = False,
        standby: int = 0,
        project: str = DEFAULT_PROJECT,
    ) -> Operation:
        """Capture VM ``vm`` as template ``template`` in an operation (its result: the
        template's manifest). Warm: its running guest is saved too, and ``standby``
        VMs of it are kept ready; if they cannot be, the template goes again."""
        record = self.vms.repo.get(vm, project)
        if standby:
            why = unfit_source(record.config) if warm else "it needs to be a warm template"
            if why is not None:
                raise InvalidInput(
                    f"VM '{vm}' cannot make a template with standby VMs: {why}",
                    hint="publish it without standby VMs",
                )

        async def work(op: Operation) -> BaseModel:
            if not warm:
                op.progress(f"generalizing and capturing VM '{vm}'")
                return await self.clones.publish(vm, template, project=project)
            async with revert_on_error() as undo:
                manifest = await self.warm.publish(
                    vm, template, project=project, progress=op.progress
                )
                undo.push("delete the template", lambda: self.transfer.delete_image(template))
                if standby:
                    self.warm.standby.set_count(template, standby)
                    manifest = self.images.store.get(template)
            return manifest

        kind = "warm template" if warm else "template"
        description = f"publish VM '{vm}' as {kind} '{template}'"
        return self.operations.start(project, "publish", description, work)
