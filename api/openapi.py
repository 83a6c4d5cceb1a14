"""The OpenAPI 3.1 document, built from the routes' contracts and the pydantic classes the
handlers validate with; `/openapi.json` serves it and `/docs` renders it with a Swagger UI
the relay serves itself (no CDN)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from api.contract import ApiRoute, Contract
from api.idempotency import HEADER as IDEMPOTENCY_HEADER
from api.schemas import MAX_ID, Problem

_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
# Path parameters by name: the same bounds `int_param` / `str_param` enforce.
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "ticketId": _ID,
    "messageId": _ID,
    "categoryId": _ID,
    "tagId": _ID,
    "keyId": _ID,
    "partnerId": _ID,
    "fleetId": _ID,
    "address": {"type": "string", "minLength": 1, "maxLength": 320},
    "tripId": {"type": "string", "minLength": 1, "maxLength": 36},
    "attachmentId": {"type": "string", "minLength": 1, "maxLength": 36},
    "partnerTripId": {"type": "string", "minLength": 1, "maxLength": 200},
    "orderId": {"type": "string", "minLength": 1, "maxLength": 200},
}

_ERROR_TEXT = {
    400: "The body is not a JSON object.",
    401: "No API key, or an unknown or revoked one.",
    404: "Not found, or not yours (the same answer, so nothing leaks).",
    409: "The resource's state forbids this (see `detail`).",
    413: "The request body is larger than the configured limit.",
    415: "The body is not in the expected media type.",
    422: "Invalid fields; `invalidParams` names each with its reason.",
}

DOCS_PAGE = Path(__file__).parent / "templates" / "docs.html"
# Swagger UI 5 (OpenAPI 3.1) comes from the swagger-ui-py package's static files rather
# than a CDN or a copy in this repository; only the files the page loads are served.
_SWAGGER = Path(str(resources.files("swagger_ui") / "static"))
DOCS_ASSETS = {
    "swagger-ui-bundle.js": (_SWAGGER / "swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": (_SWAGGER / "swagger-ui.css", "text/css"),
    "docs-init.js": (Path(__file__).parent / "static" / "docs-init.js", "text/javascript"),
}


def _error_statuses(route: ApiRoute) -> list[int]:
    contract = route.contract
    statuses = set(contract.errors)
    if contract.auth != "none":
        statuses.add(401)
    if contract.auth == "admin":
        statuses.add(404)  # the admin API answers 404 while RELAY_ADMIN_KEY is unset
    if contract.body is not None:
        statuses |= {400, 413, 415, 422}
    if contract.upload:
        statuses |= {413, 415, 422}
    if contract.query is not None or contract.idempotent:
        statuses.add(422)
    if "{" in route.path:
        statuses.add(404)
    return sorted(statuses)


def _models(routes: Sequence[ApiRoute]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(Problem, "serialization"): None}
    for route in routes:
        c = route.contract
        if c.body is not None:
            wanted[(c.body, "validation")] = None
        for model in c.ok.values():
            if model is not None:
                wanted[(model, "serialization")] = None
    return list(wanted)


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation", ref_template="#/components/schemas/{model}")
    parameters = []
    for name, prop in schema["properties"].items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": prop}
        if prop.get("type") == "array":
            parameter |= {"style": "form", "explode": True}
        parameters.append(parameter)
    return parameters


Refs = Mapping[tuple[Any, JsonSchemaMode], Any]


def _operation(route: ApiRoute, refs: Refs) -> dict[str, Any]:
    c: Contract = route.contract
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS[name]}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    if c.query is not None:
        parameters += _query_parameters(c.query)
    if c.idempotent:
        parameters.append(
            {
                "name": IDEMPOTENCY_HEADER,
                "in": "header",
                "required": False,
                "description": (
                    "Retry safely: the same key and body replay the first response and create"
                    " nothing; the same key with another body is a 422."
                ),
                "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
            }
        )
    responses: dict[str, Any] = {}
    for status, model in c.ok.items():
        response: dict[str, Any] = {"description": c.description or c.summary}
        if model is not None:
            response["content"] = {"application/json": {"schema": refs[(model, "serialization")]}}
        elif c.binary:
            response["content"] = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
        responses[str(status)] = response
    problem = {"application/problem+json": {"schema": refs[(Problem, "serialization")]}}
    for status in _error_statuses(route):
        responses[str(status)] = {"description": _ERROR_TEXT[status], "content": problem}
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": c.summary,
        "tags": [c.tag],
        "parameters": parameters,
        "responses": responses,
        "security": {"partner": [{"partnerKey": []}], "admin": [{"adminKey": []}]}.get(c.auth, []),
    }
    if c.description:
        operation["description"] = c.description
    if c.body is not None:
        operation["requestBody"] = {
            "required": not c.body_optional,
            "content": {"application/json": {"schema": refs[(c.body, "validation")]}},
        }
    if c.upload:
        operation["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    return operation


def api_routes(routes: Iterable[BaseRoute]) -> list[ApiRoute]:
    return [r for r in routes if isinstance(r, ApiRoute)]


def openapi_document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    described = api_routes(routes)
    refs, definitions = models_json_schema(
        _models(described), ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in described:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    scheme = {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "Send `Authorization: ApiKey <key>`; keys are issued by the operator.",
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "support-relay",
            "version": _version(),
            "description": (
                "Open support tickets about trips; the relay emails the fleet from masked"
                " aliases and files its replies. Errors are application/problem+json."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "partnerKey": scheme,
                "adminKey": {**scheme, "description": "`Authorization: ApiKey <RELAY_ADMIN_KEY>`."},
            },
        },
    }


def _version() -> str:
    try:
        return version("support-relay")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0.0.0"


async def openapi_json(request: Request) -> Response:
    document = request.app.state.openapi if hasattr(request.app.state, "openapi") else None
    if document is None:
        document = openapi_document(request.app.routes)
        request.app.state.openapi = document
    return JSONResponse(document)


async def docs_page(request: Request) -> Response:
    return FileResponse(DOCS_PAGE, media_type="text/html")


async def docs_asset(request: Request) -> Response:
    found = DOCS_ASSETS.get(request.path_params["name"])
    if found is None:
        raise HTTPException(404)
    path, media_type = found
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "max-age=3600"})


routes: list[BaseRoute] = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs_page, methods=["GET"]),
    Route("/docs/assets/{name}", docs_asset, methods=["GET"]),
]
