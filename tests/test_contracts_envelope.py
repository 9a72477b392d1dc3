"""The Envelope: constructors, immutability, subjects, validation, unwrap."""

from __future__ import annotations

import types
import uuid
from typing import Any

import attrs
import pytest

from cbs.contracts import (
    ERROR_SCHEMA,
    BadRequest,
    CbsError,
    Envelope,
    Internal,
    NotFound,
    Timeout,
    Unavailable,
    parse_subject,
    subject_for,
)

ID = "550e8400-e29b-41d4-a716-446655440000"
VALID: dict[str, Any] = {
    "id": ID,
    "service": "greeter",
    "verb": "say_hello",
    "schema": "demo/v1/Name",
    "payload": {"name": "Ada Lovelace"},
}


def make(**changes: Any) -> Envelope:
    """An envelope built from VALID with some fields replaced (None drops payload)."""
    return Envelope(**{**VALID, **changes})


def assert_bad_request(fields: dict[str, Any], field: str, constraint: str) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        make(**fields)
    error = info.value
    assert type(error) is BadRequest
    assert error.details == {"field": field, "constraint": constraint}
    assert f"'{field}'" in error.message
    return error


@pytest.fixture
def request_env() -> Envelope:
    return Envelope.request("greeter", "say_hello", {"name": "Ada"}, schema="demo/v1/Name")


# -- constructors ---------------------------------------------------------------


def test_request_gets_a_fresh_uuid4_id(request_env: Envelope) -> None:
    assert uuid.UUID(request_env.id).version == 4
    other = Envelope.request("greeter", "say_hello", {"name": "Ada"}, schema="demo/v1/Name")
    assert other.id != request_env.id


def test_request_fields(request_env: Envelope) -> None:
    assert (request_env.service, request_env.verb) == ("greeter", "say_hello")
    assert request_env.schema == "demo/v1/Name"
    assert request_env.payload == {"name": "Ada"}
    assert request_env.error is None
    assert not request_env.is_error


def test_request_keeps_a_given_id() -> None:
    env = Envelope.request("greeter", "say_hello", {}, schema="demo/v1/Name", id=ID)
    assert env.id == ID


def test_request_accepts_any_mapping_and_stores_a_plain_dict() -> None:
    source = {"name": "Ada"}
    env = Envelope.request(
        "greeter", "say_hello", types.MappingProxyType(source), schema="demo/v1/Name"
    )
    assert type(env.payload) is dict
    source["name"] = "changed"
    assert env.payload == {"name": "Ada"}


@pytest.mark.parametrize("payload", [["name"], "Ada", 42, None])
def test_request_rejects_a_payload_that_is_not_an_object(payload: Any) -> None:
    with pytest.raises(BadRequest) as info:
        Envelope.request("greeter", "say_hello", payload, schema="demo/v1/Name")
    assert info.value.details == {"field": "payload", "constraint": "type"}


def test_reply_keeps_id_service_verb_and_schema(request_env: Envelope) -> None:
    reply = request_env.reply({"message": "Hello Ada!"})
    assert (reply.id, reply.service, reply.verb) == (request_env.id, "greeter", "say_hello")
    assert reply.schema == request_env.schema
    assert reply.payload == {"message": "Hello Ada!"}
    assert reply.error is None


def test_reply_may_name_its_own_schema(request_env: Envelope) -> None:
    assert request_env.reply({}, schema="demo/v1/Greeting").schema == "demo/v1/Greeting"


def test_reply_rejects_a_payload_that_is_not_an_object(request_env: Envelope) -> None:
    with pytest.raises(BadRequest):
        request_env.reply([1, 2])  # type: ignore[arg-type]


def test_error_reply_carries_the_wire_error(request_env: Envelope) -> None:
    error = BadRequest("Missing required field 'name'", details={"field": "name"})
    reply = request_env.error_reply(error)
    assert (reply.id, reply.service, reply.verb) == (request_env.id, "greeter", "say_hello")
    assert reply.schema == ERROR_SCHEMA == "cbs/v1/Error"
    assert reply.payload is None
    assert reply.error == error.to_wire()
    assert reply.is_error


def test_error_reply_may_name_its_own_schema(request_env: Envelope) -> None:
    assert request_env.error_reply(NotFound(), schema="demo/v1/Error").schema == "demo/v1/Error"


# -- immutability ---------------------------------------------------------------


@pytest.mark.parametrize("field", ["id", "service", "verb", "schema", "payload", "error"])
def test_fields_cannot_be_reassigned(request_env: Envelope, field: str) -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(request_env, field, None)


def test_no_new_attributes_can_be_added(request_env: Envelope) -> None:
    with pytest.raises(AttributeError):
        request_env.extra = 1  # type: ignore[attr-defined]


def test_evolve_revalidates(request_env: Envelope) -> None:
    with pytest.raises(BadRequest):
        attrs.evolve(request_env, service="Not-Snake")


def test_envelopes_compare_by_value() -> None:
    assert make() == make()
    assert make() != make(verb="other")


# -- subjects -------------------------------------------------------------------


def test_subject_and_queue_group(request_env: Envelope) -> None:
    assert request_env.subject == "cbs.greeter.say_hello"
    assert request_env.queue_group == "greeter"
    assert subject_for("printer", "write") == "cbs.printer.write"


def test_parse_subject_inverts_subject_for() -> None:
    assert parse_subject(subject_for("prompt_name", "read")) == ("prompt_name", "read")


@pytest.mark.parametrize(
    "subject",
    ["cbs.greeter", "cbs.greeter.say_hello.extra", "nats.greeter.say_hello", "cbs.Greeter.x", ""],
)
def test_parse_subject_rejects_anything_but_three_cbs_tokens(subject: str) -> None:
    with pytest.raises(BadRequest):
        parse_subject(subject)


# -- field validation -----------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "not-a-uuid",
        "",
        str(uuid.uuid1()),  # version 1
        "550e8400-e29b-31d4-a716-446655440000",  # version 3
        "550e8400-e29b-41d4-c716-446655440000",  # wrong variant
        "550e8400e29b41d4a716446655440000",  # no hyphens
        "{550e8400-e29b-41d4-a716-446655440000}",
        "550e8400-e29b-41d4-a716-446655440000\n",
        " 550e8400-e29b-41d4-a716-446655440000",
        42,
        None,
    ],
)
def test_id_must_be_a_uuid4_string(value: Any) -> None:
    error = assert_bad_request({"id": value}, "id", "format")
    assert "UUID v4" in error.message


@pytest.mark.parametrize("value", [str(uuid.uuid4()), ID.upper()])
def test_id_accepts_uuid4_in_either_case(value: str) -> None:
    assert make(id=value).id == value


@pytest.mark.parametrize("field", ["service", "verb"])
@pytest.mark.parametrize(
    "value",
    ["Greeter", "say-hello", "1st", "_private", "", "say hello", "say.hello", "greeter\n", "é"],
)
def test_service_and_verb_must_be_lower_snake_case(field: str, value: str) -> None:
    error = assert_bad_request({field: value}, field, "pattern")
    assert "snake_case" in error.message


@pytest.mark.parametrize("field", ["service", "verb"])
@pytest.mark.parametrize("value", [None, 1, ["greeter"]])
def test_service_and_verb_must_be_strings(field: str, value: Any) -> None:
    assert_bad_request({field: value}, field, "type")


@pytest.mark.parametrize("value", ["a", "say_hello", "v2", "x_1_"])
def test_service_and_verb_accept_snake_case(value: str) -> None:
    env = make(service=value, verb=value)
    assert env.subject == f"cbs.{value}.{value}"


@pytest.mark.parametrize(
    "value",
    [
        "demo/1/Name",
        "Demo/v1/Name",
        "d/v1/Name",  # domain needs two characters
        "demo/v1/",
        "demo/v1/1Name",
        "demo/vX/Name",
        "demo/v1/Name/Extra",
        "demo.v1.Name",
        "demo/v1/Name\n",
        "",
    ],
)
def test_schema_must_read_domain_vn_type(value: str) -> None:
    error = assert_bad_request({"schema": value}, "schema", "pattern")
    assert "domain/v1/Type" in error.message


def test_schema_must_be_a_string() -> None:
    assert_bad_request({"schema": 1}, "schema", "type")


@pytest.mark.parametrize("value", ["demo/v1/Name", "cbs/v1/Error", "my_domain/v10/type_2"])
def test_schema_accepts_domain_vn_type(value: str) -> None:
    assert make(schema=value).schema == value


# -- payload xor error ----------------------------------------------------------


def test_payload_and_error_together_are_rejected() -> None:
    error = assert_bad_request({"error": {"code": "Internal", "message": "m"}}, "payload", "oneOf")
    assert "Exactly one" in error.message


def test_neither_payload_nor_error_is_rejected() -> None:
    assert_bad_request({"payload": None}, "payload", "oneOf")


@pytest.mark.parametrize("payload", [[], "x", 1, True])
def test_payload_must_be_an_object(payload: Any) -> None:
    assert_bad_request({"payload": payload}, "payload", "type")


def test_an_empty_payload_is_fine() -> None:
    assert make(payload={}).payload == {}


@pytest.mark.parametrize(
    ("error", "field", "constraint"),
    [
        (["BadRequest"], "error", "type"),
        ({"code": "Internal", "message": "m", "trace": "..."}, "error", "additional"),
        ({"code": "Teapot", "message": "m"}, "error.code", "enum"),
        ({"code": ["BadRequest"], "message": "m"}, "error.code", "enum"),
        ({"code": {"BadRequest": 1}, "message": "m"}, "error.code", "enum"),
        ({"message": "m"}, "error.code", "enum"),
        ({"code": "Internal"}, "error.message", "required"),
        ({"code": "Internal", "message": 1}, "error.message", "required"),
        ({"code": "Internal", "message": "m", "details": []}, "error.details", "type"),
        ({"code": "Internal", "message": "m", "details": None}, "error.details", "type"),
    ],
)
def test_error_object_rules(error: Any, field: str, constraint: str) -> None:
    with pytest.raises(BadRequest) as info:
        make(payload=None, error=error)
    assert type(info.value) is BadRequest
    assert info.value.details == {"field": field, "constraint": constraint}


# -- unwrap / to_exception ------------------------------------------------------


def test_unwrap_returns_the_payload_of_a_success(request_env: Envelope) -> None:
    assert request_env.reply({"message": "Hello Ada!"}).unwrap() == {"message": "Hello Ada!"}


@pytest.mark.parametrize("cls", [BadRequest, Timeout, NotFound, Internal, Unavailable])
def test_unwrap_raises_the_error_of_a_failure(request_env: Envelope, cls: type[CbsError]) -> None:
    sent = cls("It failed", details={"field": "name"})
    reply = request_env.error_reply(sent)
    with pytest.raises(cls) as info:
        reply.unwrap()
    assert type(info.value) is cls
    assert info.value == sent


def test_to_exception_is_none_for_a_success(request_env: Envelope) -> None:
    assert request_env.to_exception() is None


@pytest.mark.parametrize("cls", [BadRequest, Timeout, NotFound, Internal, Unavailable])
def test_to_exception_rebuilds_the_error(request_env: Envelope, cls: type[CbsError]) -> None:
    sent = cls("It failed")
    error = request_env.error_reply(sent).to_exception()
    assert type(error) is cls
    assert error == sent


def test_to_dict_has_exactly_the_present_fields(request_env: Envelope) -> None:
    assert make().to_dict() == VALID
    failed = request_env.error_reply(NotFound("gone"))
    assert failed.to_dict() == {
        "id": request_env.id,
        "service": "greeter",
        "verb": "say_hello",
        "schema": ERROR_SCHEMA,
        "error": {"code": "NotFound", "message": "gone"},
    }
