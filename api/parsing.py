"""Turning an HTTP request into typed values, or into the problem that says why not.

- A body must be ``application/json`` (415), at most the app's ``client_max_size`` (413: by its
  Content-Length before a byte of it is read, or once more has arrived), JSON
  (400: also for NaN, Infinity, duplicate keys, numbers Python will not parse and nesting
  deeper than Python's recursion limit), and valid
  for its model (422 with every field's error). Every refusal says what is wrong in the
  service's words, never the JSON decoder's ("Expecting value: line 1 column 1 (char 0)").
- ``Expect: 100-continue`` is answered ``100 Continue`` only here, once the request was let
  through (its token, its role, its media type and its declared size): a client refused gets
  its final answer instead, and never sends the body (``api.routing`` keeps aiohttp from
  answering 100 before the handlers run).
- A body-less POST to a route whose body has no required field reads as ``{}``.
- Path user names are given as the document says (``models.USERNAME_PATTERN``) and normalised
  by the domain; a malformed one is 422 ``validation_error``
  (it is a bad request, not a missing account). A malformed refund request or case id is 404:
  ids are the server's, and one that cannot exist is not found.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn, TypeVar
from uuid import UUID

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from pydantic import BaseModel, ValidationError

from api import messages, models
from api.keys import READING_BODY
from api.problems import BodyTooLarge, MalformedJson, UnsupportedMediaType, ValidationFailed
from ledger import identity
from ledger.errors import NotFound

M = TypeVar("M", bound=BaseModel)
JSON = "application/json"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(models.IDEMPOTENCY_KEY_PATTERN)
_USERNAME = re.compile(models.USERNAME_PATTERN)


class _NotJson(ValueError):
    """What the decoder's hooks refuse, said in words."""


def _refuse_constant(name: str) -> NoReturn:
    raise _NotJson(f"{name} is not a JSON value")


# Longer integers than any amount, position or limit the API takes: refused in words before
# Python's own limit on converting digits (4,300) speaks of sys.set_int_max_str_digits().
MAX_INTEGER_DIGITS = 64


class _HugeInteger(Exception):
    def __init__(self, digits: int) -> None:
        super().__init__(digits)
        self.digits = digits


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise _HugeInteger(digits)
    return int(text)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _NotJson("a key appears twice in one object")
    return found


# One decoder for every body: ``json.loads`` with hooks builds a new one for each call (about a
# hundredth of a deposit's time on the event loop). A decoder keeps no state between calls.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, object_pairs_hook=_no_duplicate_keys,
                            parse_int=_bounded_int)


def _decode(raw: bytes) -> Any:
    """``json.loads(raw, ...)`` with the hooks above: the bytes' encoding as ``json.loads``
    detects it (UTF-8, -16 or -32; a UTF-8 byte order mark skipped)."""
    return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


# The JSON decoder's findings (``JSONDecodeError.msg``, by how they begin) in words.
_DECODER_WORDS: tuple[tuple[str, str], ...] = (
    ("Expecting value", "a value is missing, or is not one JSON has (text in double quotes, "
                        "a number, true, false, null, an object or a list)"),
    ("Expecting ',' delimiter", "a comma or a closing bracket is missing"),
    ("Expecting ':' delimiter", "a colon is missing after a key"),
    ("Expecting property name", "a key must be text in double quotes, and no comma may come "
                                "before a closing brace"),
    ("Unterminated string", "a text is not closed by a double quote"),
    ("Invalid control character", "a text holds a control character: write it escaped "
                                  "(\\n, \\t, \\u0000)"),
    ("Invalid \\", "a text holds an escape JSON does not have"),
    ("Extra data", "something follows the JSON value"),
)


def _json_words(error: json.JSONDecodeError) -> str:
    """Where and how the body breaks JSON's rules, for a person."""
    if not error.doc.strip():
        return "the body holds no JSON value: send a JSON object"
    what = next((words for start, words in _DECODER_WORDS if error.msg.startswith(start)),
                "it is not written as JSON")
    where = ("where the body ends" if error.pos >= len(error.doc)
             else f"at character {error.pos + 1} of {len(error.doc)}")
    return f"the body is not valid JSON: {what} ({where})"


def _too_large(request: web.Request, size: int | None) -> BodyTooLarge:
    limit = request.client_max_size
    given = "is too large" if size is None else f"is {size:,} bytes"
    return BodyTooLarge(f"the body {given}: the most a request may send is {limit:,} bytes "
                        f"({limit // 1024} KiB)")


def _invalid(error: ValidationError, model: type[BaseModel], *, where: str = "body",
             query: bool = False) -> ValidationFailed:
    # Said for a person (api.messages): no pydantic wording, no regular expressions.
    errors = messages.messages(error.errors(include_url=False, include_input=False), model,
                               where=where, query=query)
    return ValidationFailed("the request is not valid", errors=errors)


async def body(request: web.Request, model: type[M]) -> M:
    if not request.body_exists and not any(f.is_required() for f in model.model_fields.values()):
        return model()
    if request.content_type != JSON:
        raise UnsupportedMediaType(f"the body must be {JSON}")
    raw = await _read(request)
    try:
        data = _decode(raw)
    except _HugeInteger as huge:
        raise ValidationFailed("the request is not valid", errors=[{
            "field": "body",
            "message": f"a number of {huge.digits:,} digits: no amount, position or limit has "
                       f"more than {MAX_INTEGER_DIGITS}"}]) from None
    except json.JSONDecodeError as error:
        raise MalformedJson(_json_words(error)) from None
    except UnicodeDecodeError:
        raise MalformedJson("the body is not valid JSON: it is not text in UTF-8 (nor UTF-16 "
                            "or UTF-32)") from None
    except _NotJson as error:
        raise MalformedJson(f"the body is not valid JSON: {error}") from None
    except ValueError:  # no other is known: still not the decoder's words
        raise MalformedJson("the body is not valid JSON") from None
    except RecursionError:  # [[[[...]]]]: 64 KiB nest far deeper than the parser's stack
        raise MalformedJson("the body nests arrays or objects too deeply") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise _invalid(error, model) from None


async def _read(request: web.Request) -> bytes:
    """The whole body: refused by its declared size before any of it is read, and only then
    ``100 Continue`` when the client waits for it. Marked as being read, so the deadline
    passing meanwhile is the client's (408, ``api.limits``)."""
    declared = request.content_length
    if declared is not None and declared > request.client_max_size:
        raise _too_large(request, declared)
    if (request.version == HttpVersion11
            and request.headers.get(hdrs.EXPECT, "").lower() == "100-continue"):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own: the answer has not begun
    request[READING_BODY] = True  # left so when the deadline cancels the read
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:  # no Content-Length, or a coding that expands
        raise _too_large(request, None) from None
    request[READING_BODY] = False
    return raw


def query(request: web.Request, model: type[M]) -> M:
    data: dict[str, str] = {}
    for name in request.query:
        values = request.query.getall(name)
        if len(values) > 1:
            raise ValidationFailed(
                "the request is not valid",
                errors=[{"field": name, "message": "give this parameter once"}],
            )
        data[name] = values[0]
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise _invalid(error, model, where="query", query=True) from None


def idempotency_key(request: web.Request) -> str | None:
    keys = request.headers.getall(IDEMPOTENCY_HEADER, [])
    if not keys:
        return None
    if len(keys) > 1 or not _IDEMPOTENCY_KEY.fullmatch(keys[0]):
        raise ValidationFailed(
            "the request is not valid",
            errors=[{"field": IDEMPOTENCY_HEADER,
                     "message": "one key of 1-255 printable ASCII characters"}],
        )
    return keys[0]


MAX_CODINGS = 32  # of Accept-Encoding looked at: more is no client's list


def accepts_gzip(request: web.Request) -> bool:
    """Whether the client lists gzip (or ``*``) as acceptable in ``Accept-Encoding`` (RFC 9110
    12.5.3; ``q=0`` refuses it). No header, or a header naming neither, is plain bytes: the
    codings a client may take but did not ask for are not sent."""
    weights: dict[str, float] = {}
    for item in ",".join(request.headers.getall("Accept-Encoding", [])).split(",")[:MAX_CODINGS]:
        coding, *params = (part.strip() for part in item.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if coding:
            weights[coding.lower()] = weight
    for coding in ("gzip", "x-gzip", "*"):
        if coding in weights:
            return weights[coding] > 0
    return False


def username(request: web.Request) -> str:
    raw = request.match_info["username"]
    if not _USERNAME.fullmatch(raw):
        raise ValidationFailed(
            "the request is not valid",
            errors=[{"field": "username", "message": models.USERNAME_DESCRIPTION}],
        )
    return identity.username(raw)


def refund_request_id(request: web.Request) -> UUID:
    return _server_id(request, "refund request")


def case_id(request: web.Request) -> UUID:
    return _server_id(request, "return case")


def _server_id(request: web.Request, what: str) -> UUID:
    raw = request.match_info["id"]
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound(f"no {what} {raw!r}", id=raw) from None
