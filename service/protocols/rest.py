"""The friendly REST endpoints, generic over the model contract: parse the wire form an endpoint declares, call
the model method it names, answer JSON (or the model's binary answer).

Wire forms: multipart/form-data (file fields as Uploads, other fields validated by the endpoint's form model),
a raw body (any content type), a JSON object validated by the endpoint's schema. Every request the wire form
does not fit gets a 4xx in the one error shape, saying what to send; schema errors add "detail", one entry per
offending field.
"""

from __future__ import annotations

from typing import Any, Callable

from pydantic import BaseModel, ValidationError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from modelcore.errors import InputError
from service.models.contract import Binary, Endpoint, JsonBody, Multipart, RawBody, ServedModel, Upload
from service.operations.frontdoor import Call, Route
from service.operations.http import Response, json_response
from service.protocols.serving import answer_with, choose
from service.runtime.repository import Repository

JSON_TYPES = ("application/json",)
MAX_FORM_PARTS = 16


def routes(model_class: type[ServedModel], repository: Repository) -> list[Route]:
    """One POST route per friendly endpoint the model class declares, answered by its current served version."""
    return [Route(endpoint.path, handler(model_class.name, endpoint, repository), ("POST",), model_class.name)
            for endpoint in model_class.endpoints]


def handler(name: str, endpoint: Endpoint, repository: Repository) -> Callable:
    parse = PARSERS[type(endpoint.body)]

    async def handle(call: Call) -> Response:
        model = choose(repository, name)
        arguments = {**parse(endpoint.body, call), **query_arguments(endpoint, call)}

        async def method(version: ServedModel) -> Any:
            return await getattr(version, endpoint.method)(**arguments)

        return answer(await answer_with(repository, model, method, call.scope))

    handle.__name__ = endpoint.method
    return handle


def answer(result: dict | Binary) -> Response:
    if isinstance(result, Binary):
        return Response(result.content, media_type=result.media_type, headers=result.headers)
    return json_response(result)


def query_arguments(endpoint: Endpoint, call: Call) -> dict[str, str]:
    if not endpoint.query:
        return {}
    given = call.query()
    found = {}
    for parameter in endpoint.query:
        value = given.get(parameter.name)
        if value is None:
            continue
        if value not in parameter.values:
            raise InputError(f"Query parameter {parameter.name} is {value!r}; send one of {', '.join(parameter.values)} "
                             f"({parameter.description}).")
        found[parameter.name] = value
    return found


# JSON bodies -------------------------------------------------------------------------------------------------


def parse_json(body: JsonBody, call: Call) -> dict[str, Any]:
    """The body validated by the endpoint's schema, as keyword arguments."""
    media_type = (call.header(b"content-type") or "").split(";")[0].strip().lower()
    # No Content-Type is read as JSON; structured-syntax types like application/ld+json too.
    if media_type and media_type not in JSON_TYPES and not media_type.endswith("+json"):
        raise InputError(f"This endpoint got Content-Type {media_type}; {json_to_send(body.schema)}.", 415)
    try:
        document = body.schema.model_validate_json(call.body)
    except ValidationError as exc:
        raise schema_error(exc, json_to_send(body.schema)) from None
    return {name: getattr(document, name) for name in type(document).model_fields}


def json_to_send(schema: type[BaseModel]) -> str:
    return f"send Content-Type: application/json with a JSON object with the field(s) {fields_of(schema)}"


def fields_of(schema: type[BaseModel]) -> str:
    return ", ".join(f"{name}{'' if field.is_required() else ' (optional)'}" for name, field in schema.model_fields.items())


def schema_error(exc: ValidationError, to_send: str) -> InputError:
    """400 naming the first offending field and what to send, with every error in "detail"."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "the body"
    message = f"{where}: {first['msg']}" if first["type"] != "json_invalid" else f"The body is not valid JSON ({first['msg']})"
    return InputError(f"{message}; {to_send}.", 400, [dict(error, loc=list(error["loc"])) for error in errors])


# raw bodies --------------------------------------------------------------------------------------------------


def parse_raw(body: RawBody, call: Call) -> dict[str, Upload]:
    return {body.parameter: Upload(call.body, "as the request body")}


# multipart bodies --------------------------------------------------------------------------------------------


def parse_multipart(body: Multipart, call: Call) -> dict[str, Any]:
    """File fields as Uploads and the other fields validated, as keyword arguments; 4xx for anything else."""
    to_send = multipart_to_send(body)
    content_type = call.header(b"content-type") or ""
    media_type, options = parse_options_header(content_type)
    if media_type.decode("latin-1").lower() != "multipart/form-data":
        raise InputError(f"This endpoint got Content-Type {media_type.decode('latin-1') or '(none)'}; {to_send}.", 415)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InputError(f"The multipart Content-Type has no boundary parameter; {to_send}.")
    parts = form_parts(call.body, boundary, to_send)
    return checked_form(body, parts, to_send)


def multipart_to_send(body: Multipart) -> str:
    names = [*body.files, *(f"{name} (optional)" if not field.is_required() else name
                            for name, field in (body.fields.model_fields.items() if body.fields else ()))]
    return f"send a multipart/form-data body (e.g. curl -F) with the field(s) {', '.join(names)}"


def form_parts(data: bytes, boundary: bytes, to_send: str) -> dict[str, bytes]:
    """{field name: content} of a whole multipart body (the last part wins for a repeated name)."""
    collector = FormCollector()
    parser = MultipartParser(boundary, collector.callbacks())
    try:
        parser.write(data)
        parser.finalize()
    except MultipartParseError as exc:
        raise InputError(f"The multipart body is malformed ({str(exc).rstrip('.')}); {to_send}.") from None
    if collector.open_part or not collector.finished or collector.malformed:
        raise InputError(f"The multipart body is malformed (a part without a name, or no closing boundary); {to_send}.")
    if len(collector.parts) > MAX_FORM_PARTS:
        raise InputError(f"The multipart body has {len(collector.parts)} fields; {to_send}.")
    return collector.parts


class FormCollector:
    """python-multipart's callbacks, collecting each part's name and bytes in memory (the body is bounded)."""

    def __init__(self) -> None:
        self.parts: dict[str, bytes] = {}
        self.chunks: list[bytes] = []
        self.header_name = b""
        self.header_value = b""
        self.name: str | None = None
        self.open_part = False
        self.finished = False
        self.malformed = False

    def callbacks(self) -> dict[str, Callable]:
        return {"on_part_begin": self.begin, "on_part_data": self.data, "on_part_end": self.end,
                "on_header_field": self.field, "on_header_value": self.value, "on_header_end": self.header_end,
                "on_end": self.done}

    def begin(self) -> None:
        self.open_part, self.name, self.chunks = True, None, []

    def field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            _, options = parse_options_header(self.header_value)
            name = options.get(b"name")
            self.name = name.decode("utf-8", "replace") if name is not None else None
        self.header_name, self.header_value = b"", b""

    def data(self, data: bytes, start: int, end: int) -> None:
        self.chunks.append(data[start:end])

    def end(self) -> None:
        self.open_part = False
        if self.name is None:
            self.malformed = True
            return
        self.parts[self.name] = b"".join(self.chunks)

    def done(self) -> None:
        self.finished = True


def checked_form(body: Multipart, parts: dict[str, bytes], to_send: str) -> dict[str, Any]:
    """The form's fields against what the endpoint takes: 400 naming unexpected and missing ones."""
    expected = set(body.files) | set(body.fields.model_fields if body.fields else ())
    errors = [{"type": "extra_forbidden", "loc": [name], "msg": "Unexpected field"} for name in parts if name not in expected]
    errors += [{"type": "missing", "loc": [name], "msg": "Field required"} for name in body.files if name not in parts]
    if errors:
        named = "; ".join(f"{error['loc'][0]}: {error['msg']}" for error in errors)
        raise InputError(f"{named}; {to_send}.", 400, errors)
    arguments: dict[str, Any] = {name: Upload(parts[name], f"in the multipart field '{name}'") for name in body.files}
    if body.fields:
        given = {name: parts[name].decode("utf-8", "replace") for name in body.fields.model_fields if name in parts}
        try:
            form = body.fields.model_validate(given)
        except ValidationError as exc:
            raise schema_error(exc, to_send) from None
        arguments.update({name: getattr(form, name) for name in body.fields.model_fields})
    return arguments


PARSERS: dict[type, Callable[[Any, Call], dict[str, Any]]] = {
    JsonBody: parse_json, RawBody: parse_raw, Multipart: parse_multipart,
}
