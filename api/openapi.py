"""The OpenAPI 3.1 document of what is served, generated from the route table and the models.

Each operation lists its path, query and header parameters, its body, every answer it can
give (its own, and the problems every route of its kind can answer: 401/403 for tokens and
roles, 400/408/413/415/422 for bodies, 422/503 for reads, 503 for writes, 500 for all), the roles
that may call it, and bearer security (none for /health).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from importlib import metadata
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api import docs, field_docs, models, problems
from api.auth import ANY_ROLE
from api.limits import REQUEST_DEADLINE_S
from api.models import MAX_PAGE
from api.routing import Link, Route
from projections import outbox

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
JsonSchema = dict[str, Any]

PATH_PARAMETERS: dict[str, JsonSchema] = {
    "username": {"type": "string", "pattern": models.USERNAME_PATTERN,
                 "description": models.USERNAME_DESCRIPTION},
    "id": {"type": "string", "format": "uuid",
           "description": "The id the server gave the refund request or return case."},
    "order_no": {"type": "string", "minLength": 1, "maxLength": 128,
                 "pattern": models.REFERENCE_PATTERN, "description": "The order number."},
    "name": {"type": "string", "enum": list(docs.ASSETS),
             "description": "The asset's file name."},
}
HEADER_PARAMETERS: dict[str, JsonSchema] = {
    "RequestId": {
        "name": "X-Request-Id", "in": "header", "required": False,
        "description": "Your id for this request: when it is 1-128 printable ASCII without "
                       "spaces it is echoed back and recorded in the events the request "
                       "writes; any other value (or none) is replaced by a fresh id.",
        "schema": {"type": "string"},
    },
    "IdempotencyKey": {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "description": "Same caller, key and body within 24 h: the first answer again, with "
                       "Idempotent-Replayed: true. Same key, other body: 422.",
        "schema": {"type": "string", "pattern": models.IDEMPOTENCY_KEY_PATTERN},
    },
}
# Every answer carries X-Request-Id; every 401 WWW-Authenticate; every 503 Retry-After.
RESPONSE_HEADERS: dict[str, JsonSchema] = {
    "X-Request-Id": {"description": "The request's id.", "required": True,
                     "schema": {"type": "string"}},
    "Idempotent-Replayed": {"description": "true when an Idempotency-Key answered it.",
                            "schema": {"type": "string", "enum": ["true"]}},
    "WWW-Authenticate": {"description": "The scheme: Bearer.", "required": True,
                         "schema": {"type": "string", "pattern": "^Bearer"}},
    "Retry-After": {"description": "Seconds to wait.", "required": True,
                    "schema": {"type": "integer", "minimum": 1}},
}
_PROBLEM_HEADERS = {401: "WWW-Authenticate", 503: "Retry-After"}


def _description(request_deadline_s: float, max_body_bytes: int) -> str:
    return (
        "The ledger of a cross-border shopping agent's customer money. Amounts are integers "
        "of minor units; see API.md.\n\n"
        f"Bounds: bodies up to {max_body_bytes // 1024} KiB (413), pages up to {MAX_PAGE} "
        f"items (422). Every request is answered within {request_deadline_s:g} s: past it, "
        "503 `deadline_exceeded`. A write handed to the store by then still completes, and "
        "the same request with the same `Idempotency-Key` (or natural key) answers its "
        "outcome. Requests wait for the store in lanes of their own (writes, plain reads, and "
        "the heavy reads of the log, journal, reconciliation, export and audit), each role "
        "with a share of each lane: a request past its role's share of its lane, past the "
        "lane's line, or waiting too long, or a write that keeps losing races for its account, "
        "is 503 `busy`. Every 503 carries `Retry-After` and is safe to retry with an "
        "idempotency or natural key."
    )


def _problem_statuses(route: Route) -> set[int]:
    statuses = {500, *route.problems}
    if route.roles is not None:
        statuses.add(401)
        if route.roles != ANY_ROLE:
            statuses.add(403)
    if route.body is not None:
        statuses |= {400, 408, 413, 415, 422, 503}
    if route.query is not None:
        statuses |= {422, 503}
    if "{username}" in route.path:
        statuses.add(422)
    return statuses


def _without_null(schema: JsonSchema) -> JsonSchema:
    """A query parameter is absent or has a value: ``T | None`` is documented as ``T``."""
    branches = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
    if len(branches) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    return {**branches[0], **rest}


def _parameters(route: Route) -> list[JsonSchema]:
    parameters: list[JsonSchema] = [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS[name]}
        for name in re.findall(r"\{(\w+)\}", route.path)
    ]
    if route.query is not None:
        schema = route.query.model_json_schema(ref_template=REF)
        required = set(schema.get("required", ()))
        for name, field_schema in schema.get("properties", {}).items():
            parameters.append({"name": name, "in": "query", "required": name in required,
                               "schema": _without_null(field_schema)})
    parameters.append({"$ref": "#/components/parameters/RequestId"})
    if route.is_write:
        parameters.append({"$ref": "#/components/parameters/IdempotencyKey"})
    return parameters


def _answers(route: Route, refs: dict[type[BaseModel], JsonSchema]) -> dict[str, JsonSchema]:
    headers: dict[str, JsonSchema] = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}
    if route.is_write:
        headers["Idempotent-Replayed"] = {"$ref": "#/components/headers/Idempotent-Replayed"}
    responses: dict[str, JsonSchema] = {}
    for status, answer in sorted(route.answers.items()):
        if isinstance(answer, type):
            content = {"application/json": {"schema": refs[answer]}}
        else:
            content = {media: {"schema": dict(answer.schema)} for media in answer.content_types}
        responses[str(status)] = {"description": HTTPStatus(status).phrase, "content": content,
                                  "headers": headers}
        if route.links and 200 <= status < 300:
            responses[str(status)]["links"] = _links(route.links)
    for status in sorted(_problem_statuses(route)):
        responses[str(status)] = {"$ref": f"#/components/responses/Problem{status}"}
    return responses


def _links(links: Sequence[Link]) -> JsonSchema:
    found: JsonSchema = {}
    for link in links:
        definition: JsonSchema = {"operationId": link.target}
        if link.parameters:
            definition["parameters"] = dict(link.parameters)
        if link.body is not None:
            definition["requestBody"] = dict(link.body)
        found[link.target] = definition
    return found


def _operation(route: Route, refs: dict[type[BaseModel], JsonSchema]) -> JsonSchema:
    operation: JsonSchema = {
        "operationId": route.name,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": _parameters(route),
        "responses": _answers(route, refs),
    }
    if route.roles is None:
        operation["security"] = []
        operation["description"] = "Served without a token."
    else:
        operation["description"] = "Roles: " + ", ".join(sorted(route.roles)) + "."
        operation["x-roles"] = sorted(route.roles)
    if route.body is not None:
        # A body is required when a field is, or when the model asks for one of several
        # (an ``anyOf`` of required fields, as photos added to a case do).
        schema = route.body.model_json_schema()
        required = bool(schema.get("required") or schema.get("anyOf"))
        operation["requestBody"] = {
            "required": required,
            "content": {"application/json": {"schema": refs[route.body]}},
        }
    return operation


def _schemas(routes: Sequence[Route]) -> tuple[dict[type[BaseModel], JsonSchema], JsonSchema]:
    bodies = {route.body for route in routes if route.body is not None}
    answers = {a for route in routes for a in route.answers.values() if isinstance(a, type)}
    answers.add(models.Problem)
    answers.add(models.WebhookMessage)  # not an answer: the body of the webhooks' POST
    inputs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((m, "validation") for m in sorted(bodies, key=lambda m: m.__name__)),
        *((m, "serialization") for m in sorted(answers, key=lambda m: m.__name__)),
    ]
    by_key, top = models_json_schema(inputs, ref_template=REF)
    refs = {model: dict(by_key[(model, mode)]) for model, mode in inputs}
    return refs, top.get("$defs", {})


# The statuses of the refusals an Idempotency-Key's record keeps (``ledger.pipeline``): the
# domain's own refusals, never a malformed request's nor the store's.
_REPLAYED_REFUSALS = frozenset({404, 409, 422})


def _problem_responses(statuses: Iterable[int]) -> JsonSchema:
    """One response per status: a Problem whose ``code`` (and so ``type``) is one of those the
    service answers with that status, with the headers that status always carries."""
    codes = problems.codes_by_status()
    responses: JsonSchema = {}
    for status in sorted(statuses):
        headers: JsonSchema = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}
        if status in _PROBLEM_HEADERS:
            name = _PROBLEM_HEADERS[status]
            headers[name] = {"$ref": f"#/components/headers/{name}"}
        if status in _REPLAYED_REFUSALS:  # a write's refusal, answered again under its key
            headers["Idempotent-Replayed"] = {
                "$ref": "#/components/headers/Idempotent-Replayed"}
        schema = {"allOf": [
            {"$ref": REF.format(model="Problem")},
            {"properties": {
                "status": {"const": status},
                "code": {"enum": codes[status]},
                "type": {"enum": [problems.TYPE_PREFIX + code for code in codes[status]]},
            }},
        ]}
        responses[f"Problem{status}"] = {
            "description": f"{HTTPStatus(status).phrase}: " + ", ".join(codes[status]),
            "headers": headers,
            "content": {"application/problem+json": {"schema": schema}},
        }
    return responses


def build(routes: Sequence[Route], *, title: str = "Ledger API",
          request_deadline_s: float = REQUEST_DEADLINE_S,
          max_body_bytes: int = 64 * 1024) -> JsonSchema:
    names = {route.name for route in routes}
    for route in routes:
        for link in route.links:
            if link.target not in names:
                raise ValueError(f"{route.name} links to {link.target}, which is not a route")
    refs, schemas = _schemas(routes)
    paths: dict[str, JsonSchema] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    statuses = {s for route in routes for s in _problem_statuses(route)}
    document: JsonSchema = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": metadata.version("ledger"),
                 "description": _description(request_deadline_s, max_body_bytes)},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": HEADER_PARAMETERS,
            "headers": RESPONSE_HEADERS,
            "responses": _problem_responses(statuses),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    _explain(document, routes)
    document["webhooks"] = _webhooks(schemas)
    return document


def _webhooks(schemas: JsonSchema) -> JsonSchema:
    """The POST each webhook receiver gets (``api.webhooks``): a message, signed."""
    headers = [
        ("Ledger-Signature", "t=<unix seconds>,v1=<hex HMAC-SHA-256 of \"<t>.<body>\" keyed "
         "with LEDGER_WEBHOOK_SECRET>: check it on the raw body (api/README.md shows how).",
         {"type": "string", "pattern": "^t=[0-9]+,v1=[0-9a-f]{64}$"}),
        ("Ledger-Delivery-Id", "The message's id: the same however often it is sent.",
         {"type": "string", "format": "uuid"}),
        ("Ledger-Message-Type", "The message's type.",
         {"type": "string", "enum": list(outbox.MESSAGE_TYPES)}),
    ]
    body = {"$ref": REF.format(model="WebhookMessage")}
    return {"outboxMessage": {"post": {
        "operationId": "receiveOutboxMessage",
        "summary": "A message of the outbox, POSTed to every receiver",
        "description": "Sent to every URL of LEDGER_WEBHOOK_URL and every `ledger webhooks "
                       "add`, in log order per customer, at least once. A 2xx answer marks it "
                       "delivered; anything else, or none, is tried again with back-off until "
                       "the message is LEDGER_WEBHOOK_MAX_AGE_S old, then parked failed.",
        "parameters": [{"name": name, "in": "header", "required": True,
                        "description": text, "schema": schema}
                       for name, text, schema in headers],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": body, "example": _example(body, schemas)}}},
        "responses": {
            "2XX": {"description": "Taken: the delivery is marked delivered."},
            "default": {"description": "Not taken: tried again later, with the same id."},
        },
    }}}


# -- descriptions and examples (issue 13): a document a reader and a client generator can use --

_EXAMPLE_DATE = "2026-11-26"
_EXAMPLE_TIME = "2026-11-26T09:00:00.000000Z"
_EXAMPLE_UUID = "0b8f3c52-4f43-4a8e-9d0c-8d6f1f0e5a11"


def _describe(schemas: JsonSchema) -> None:
    """Every property gets a description: its model's own, else the table's
    (``api.field_docs``)."""
    for model, schema in schemas.items():
        for name, prop in schema.get("properties", {}).items():
            if "description" in prop:
                continue
            text = (field_docs.MODEL_FIELD_DESCRIPTIONS.get(f"{model}.{name}")
                    or field_docs.FIELD_DESCRIPTIONS.get(name))
            if text is not None:
                prop["description"] = text
        if "description" not in schema:
            schema["description"] = f"{model}: see its fields."


def _example(schema: JsonSchema, schemas: JsonSchema, name: str | None = None,
             depth: int = 0) -> Any:
    """A value ``schema`` accepts, with the table's value for a field of that name."""
    if "$ref" in schema:
        target = schema["$ref"].rsplit("/", 1)[1]
        return _example(schemas[target], schemas, name, depth)
    if name is not None and name in field_docs.EXAMPLE_VALUES:
        value = field_docs.EXAMPLE_VALUES[name]
        if value is not None or _nullable(schema):
            if _fits(value, schema):
                return value
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "properties" in schema:
        return _object_example(schema, schemas, depth)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [b for b in schema[key] if b.get("type") != "null"] or schema[key]
            return _example(branches[0], schemas, name, depth + 1)
    if "allOf" in schema:
        return _example(schema["allOf"][0], schemas, name, depth + 1)
    kind = schema.get("type")
    if kind == "object":
        return _object_example(schema, schemas, depth)
    if kind == "array":
        count = max(1, schema.get("minItems", 1))
        return [_example(schema.get("items", {}), schemas, None, depth + 1)
                for _ in range(count)]
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), int(schema.get("exclusiveMinimum", 0)) + 1)
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return _string_example(schema, name)


def _object_example(schema: JsonSchema, schemas: JsonSchema, depth: int) -> JsonSchema:
    if depth > 12:
        return {}
    return {key: _example(prop, schemas, key, depth + 1)
            for key, prop in schema.get("properties", {}).items()
            if key in schema.get("required", ()) or depth < 3}


def _string_example(schema: JsonSchema, name: str | None) -> str:
    fmt = schema.get("format")
    if fmt == "date":
        return _EXAMPLE_DATE
    if fmt == "date-time":
        return _EXAMPLE_TIME
    if fmt == "uuid":
        return _EXAMPLE_UUID
    text = (name or "text").replace("_", "-")
    return text[: schema.get("maxLength", 64)].ljust(schema.get("minLength", 1), "x")


def _nullable(schema: JsonSchema) -> bool:
    return any(b.get("type") == "null" for b in schema.get("anyOf", ()))


def _fits(value: Any, schema: JsonSchema) -> bool:
    kinds: set[str] = {str(k) for k in (schema.get("type"),
                                         *(b.get("type") for b in schema.get("anyOf", ())))
                       if k is not None}
    if "enum" in schema and value not in schema["enum"]:
        return False  # a field named as another (type) may be one of a few values here
    if not kinds:
        return True
    by_type = {"string": str, "integer": int, "boolean": bool, "array": list,
               "object": dict, "null": type(None)}
    branches = [schema, *schema.get("anyOf", ())]
    if isinstance(value, str) and any(b.get("format") == "uuid" for b in branches):
        try:
            UUID(value)  # a field named as another (request_id) may be a UUID here
        except ValueError:
            return False
    return any(isinstance(value, by_type.get(k, object)) and
               not (k == "integer" and isinstance(value, bool)) for k in kinds)


def _problems_of(route: Route) -> str:
    codes = problems.codes_by_status()
    return " · ".join(f"{status} {', '.join(codes[status])}"
                      for status in sorted(_problem_statuses(route)))


def _explain(document: JsonSchema, routes: Sequence[Route]) -> None:
    """Descriptions of the fields, examples of the bodies and answers, and each operation's
    description: what it does, who may, and the problems it can answer."""
    schemas = document["components"]["schemas"]
    _describe(schemas)
    by_operation = {route.name: route for route in routes}
    for operations in document["paths"].values():
        for operation in operations.values():
            route = by_operation[operation["operationId"]]
            who = ("Served without a token." if route.roles is None
                   else "Roles: " + ", ".join(sorted(route.roles)) + ".")
            operation["description"] = (f"{route.summary}. {who}\n\nProblems (RFC 9457 "
                                        f"problem+json, by status and code): "
                                        f"{_problems_of(route)}.")
            operation["x-problem-codes"] = {
                str(status): problems.codes_by_status()[status]
                for status in sorted(_problem_statuses(route))}
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                body["example"] = _example(body["schema"], schemas)
            for status, answer in operation["responses"].items():
                content = answer.get("content", {}).get("application/json")
                if content is not None and status.startswith("2"):
                    content["example"] = _example(content["schema"], schemas)
            for parameter in operation["parameters"]:
                if "$ref" in parameter or "description" in parameter:
                    continue
                described = parameter["schema"].get("description") or \
                    field_docs.FIELD_DESCRIPTIONS.get(parameter["name"])
                if described:
                    parameter["description"] = described
