"""Property-based tests of the whole API from its own OpenAPI document (schemathesis):
no 5xx, every answer conforms to the schema. In-process, on a fake QEMU and a fake
image recipe, as the local root and as a project admin token."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.checks import positive_data_acceptance
from schemathesis.python import asgi as schemathesis_asgi

from hangar.api.app import create_app
from hangar.paths import Paths
from hangar.services.platform import Platform
from tests.component.conftest import _touch_overlay, fake_qemu, install_image
from tests.support.apps import BothListeners
from tests.support.daemon import kill_vm_processes
from tests.support.factories import host_facts, tiny_manifest
from tests.support.fake_net import fake_host_networking, stop_dnsmasqs
from tests.support.fake_recipe import FakeRecipe
from tests.support.recording_runner import RecordingRunner

EXAMPLES = 30  # per operation and identity: 2 x 41 operations x 30 > 1,000 cases
CALLS: list[int] = []


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Any, Platform]]:
    home = Path(tempfile.mkdtemp(prefix="hg-st-", dir="/tmp"))
    paths = Paths(state=home / "lib", runtime=home / "run")
    paths.ensure()
    install_image(paths, tiny_manifest())
    runner = RecordingRunner()
    runner.on(["qemu-img", "create"], _touch_overlay)
    platform = Platform.open(paths, host_facts(qemu_binary=str(fake_qemu(home))), runner)
    platform.images.recipes = {"tiny": FakeRecipe()}
    # Network routes make in-memory links and stand-in dnsmasqs, never real ones.
    fake_host_networking(platform, runner)
    application = NoLifespan(BothListeners(create_app(platform)))
    yield application, platform
    schemathesis_asgi.shutdown_lifespans()
    for runtime in list(platform.vms.supervisor._runtimes.values()):
        runtime.kill()
    kill_vm_processes(home)  # those the lifespan let go of
    stop_dnsmasqs(paths)
    platform.db.close()
    shutil.rmtree(home, ignore_errors=True)


class NoLifespan:
    """Schemathesis starts and stops an app's lifespan whenever it likes (loading the
    schema is one); here the platform lives as long as the module's fixture instead."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def app(world: tuple[Any, Platform]) -> Any:
    return world[0]


@pytest.fixture(scope="module")
def admin_token(world: tuple[Any, Platform]) -> str:
    platform = world[1]
    platform.projects.create("team")
    return platform.tokens.create("team", "admin", "fuzz").secret


def _run_all(app: Any, headers: dict[str, str]) -> list[str]:
    """Every operation of the schema, EXAMPLES generated cases each; failures collected."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.given(operation.as_strategy())
        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: Any) -> None:
            response = case.call(headers=headers)
            CALLS.append(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
            )
            # Not ST202 (schema-valid data must be accepted): hangard checks more than a
            # schema can say (port collisions, image names, MAC syntax) and answers such
            # requests 400/409/422 with a message; those answers are checked for conformance.
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # collect them all, one report
            subs = getattr(exc, "exceptions", [])
            detail = "; ".join(str(e)[:300] for e in subs)
            failures.append(f"{operation.method.upper()} {operation.path}: {exc} {detail}")
    return failures


def test_api_as_local_root(app: Any) -> None:
    failures = _run_all(app, {})
    assert not failures, "\n\n".join(failures)


def test_api_as_a_project_admin(app: Any, admin_token: str) -> None:
    failures = _run_all(app, {"Authorization": f"Bearer {admin_token}"})
    assert not failures, "\n\n".join(failures)


def test_at_least_a_thousand_cases_ran() -> None:
    # Runs after the two above in this module (pytest keeps file order).
    assert len(CALLS) >= 1000, f"only {len(CALLS)} generated cases ran"
