"""The OpenAPI contract: generated from the code, complete, served with its docs page, and
fuzzed by schemathesis against a real `support-relay serve` (no 5xx, no response outside the
document)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import BaseRoute

from api.app import all_routes
from api.contract import ApiRoute
from api.openapi import PATH_PARAMETERS, openapi_document
from bench.common import pg_execute
from relay.sink import free_port
from tests.conftest import PG_URL

SCRIPT = Path(sys.executable).with_name("support-relay")
# Routes that describe the API rather than belong to it.
UNDOCUMENTED = {"/openapi.json", "/docs", "/docs/assets/{name}"}


def _app_routes() -> list[BaseRoute]:
    return all_routes()


def test_every_route_is_in_the_document() -> None:
    routes = _app_routes()
    document = openapi_document(routes)
    for route in routes:
        path = getattr(route, "path", "")
        if path in UNDOCUMENTED:
            continue
        assert isinstance(route, ApiRoute), f"{path} has no contract"
        operation = document["paths"][route.path][route.method.lower()]
        assert operation["responses"], route.path
    ids = [op["operationId"] for path in document["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_document_uses_the_validating_classes() -> None:
    from api.schemas import TicketCreate

    document = openapi_document(_app_routes())
    create = document["paths"]["/v1/support/trips/{tripId}/tickets"]["post"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    # The very constraints pydantic enforces: subject ≤ 500, priority an enum, camelCase names.
    assert schema["properties"]["subject"]["maxLength"] == 500
    assert set(schema["properties"]) == {
        field.alias or name for name, field in TicketCreate.model_fields.items()
    }
    assert schema["additionalProperties"] is False
    history = document["paths"]["/v1/support/tickets"]["get"]
    names = {p["name"] for p in history["parameters"]}
    assert {"status", "category", "tag", "createdAfter", "sort", "limit", "cursor"} <= names
    assert {"Idempotency-Key"} <= {p["name"] for p in create["parameters"]}
    ticket = document["paths"]["/v1/support/tickets/{ticketId}"]["get"]["parameters"][0]
    assert ticket["in"] == "path" and ticket["schema"] == PATH_PARAMETERS["ticketId"]


# ── A real relay process for the docs and the fuzzer ──────────────────────────────────────


class Served:
    def __init__(self, base: str, admin_key: str) -> None:
        self.base = base
        self.admin = {"Authorization": f"ApiKey {admin_key}"}
        self.partner: dict[str, str] = {}


def _pg_schema(action: str, schema: str) -> None:
    assert PG_URL
    asyncio.run(
        pg_execute(PG_URL, f'{action} SCHEMA "{schema}"' + (" CASCADE" if action == "DROP" else ""))
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("contract")
    admin_key = secrets.token_urlsafe(16)
    http_port = free_port()
    env = {
        **os.environ,
        "RELAY_HTTP_PORT": str(http_port),
        "RELAY_SMTP_PORT": str(free_port()),
        "RELAY_ADMIN_KEY": admin_key,
        # Nothing is delivered: the outbox only has to accept the fleet's emails.
        "RELAY_OUTBOUND": f"maildir:{tmp / 'outbox'}",
        "RELAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'relay.db'}",
    }
    schema = None
    if PG_URL:
        schema = f"t_{secrets.token_hex(6)}"
        _pg_schema("CREATE", schema)
        env |= {"RELAY_DATABASE_URL": PG_URL, "RELAY_DATABASE_SCHEMA": schema}
    stderr = (tmp / "stderr.log").open("w")
    proc = subprocess.Popen(
        [str(SCRIPT), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        _wait_healthy(base, proc)
        yield _seed(Served(base, admin_key))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        stderr.close()
        if schema:
            _pg_schema("DROP", schema)
    log = (tmp / "stderr.log").read_text()
    assert "Traceback" not in log, log[-4000:]


def _wait_healthy(base: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "support-relay serve exited"
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("support-relay serve never became healthy")


def _seed(served: Served) -> Served:
    """Real rows behind small ids, so the fuzzer reaches past 404s on some requests."""
    with httpx.Client(base_url=served.base, timeout=15) as http:
        partner = http.post(
            "/v1/admin/partners",
            headers=served.admin,
            json={"name": "Fuzz Travel", "contactEmail": "help@partner.example"},
        ).json()
        served.partner = {"Authorization": f"ApiKey {partner['apiKey']}"}
        fleet = http.post(
            "/v1/admin/fleets",
            headers=served.admin,
            json={"name": "Fuzz Cabs", "supportEmail": "dispatch@fleet.example"},
        ).json()
        http.post("/v1/admin/categories", headers=served.admin, json={"name": "Lost item"})
        http.post("/v1/admin/tags", headers=served.admin, json={"name": "VIP", "keyword": "vip"})
        for trip in ("1", "BK-1"):
            http.put(
                f"/v1/trips/{trip}",
                headers=served.partner,
                json={
                    "fleetId": fleet["id"],
                    "pickup": "1 Main Street",
                    "dropoff": "Airport",
                    "scheduledAt": "2026-11-20T08:30:00Z",
                },
            )
            http.post(
                f"/v1/support/demand/trips/{trip}/tickets",
                headers=served.partner,
                json={"subject": "Lost umbrella", "comment": "Blue umbrella."},
            )
    return served


def test_docs_page_and_its_assets_are_served_locally(served: Served) -> None:
    with httpx.Client(base_url=served.base, timeout=15) as http:
        page = http.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assets = [part.split('"')[0] for part in page.text.split('src="')[1:]]
        assets += [part.split('"')[0] for part in page.text.split('href="')[1:]]
        assert assets and all(a.startswith("/docs/assets/") for a in assets), assets
        for asset in assets:
            served_asset = http.get(asset)
            assert served_asset.status_code == 200 and served_asset.content, asset
        # Only the page's own files: not the rest of the package's static directory.
        assert http.get("/docs/assets/swagger-editor-bundle.js").status_code == 404
        document = http.get("/openapi.json").json()
        assert document["openapi"] == "3.1.0"
        assert "/v1/support/orders/{orderId}/agent" in document["paths"]


# The document the app serves, built from the same routes (the docs test above checks the
# served copy); loading it at import lets schemathesis parametrize one test per operation.
fuzzed = schemathesis.openapi.from_dict(openapi_document(_app_routes()))


@fuzzed.parametrize()
@settings(
    max_examples=int(os.environ.get("RELAY_FUZZ_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_never_fails_and_keeps_its_contract(case: Any, served: Served) -> None:
    auth = served.admin if case.path.startswith("/v1/admin/") else served.partner
    case.call_and_validate(
        base_url=served.base,
        headers=auth,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
