"""Codec unit tests: strict decoding (only BadRequest) and deterministic encoding."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cbs.contracts import BadRequest, Envelope, Internal, NotFound, codec

ID = "550e8400-e29b-41d4-a716-446655440000"
HEAD = f'"id":"{ID}","service":"greeter","verb":"say_hello","schema":"demo/v1/Name"'
VALID: dict[str, Any] = {
    "id": ID,
    "service": "greeter",
    "verb": "say_hello",
    "schema": "demo/v1/Name",
    "payload": {"name": "Ada Lovelace"},
}
CANONICAL = (
    b'{"id":"550e8400-e29b-41d4-a716-446655440000","payload":{"name":"Ada Lovelace"},'
    b'"schema":"demo/v1/Name","service":"greeter","verb":"say_hello"}'
)


def with_payload(payload_json: str) -> bytes:
    """Envelope bytes whose payload is the given JSON text, written verbatim."""
    return ("{" + HEAD + ',"payload":' + payload_json + "}").encode()


def with_error(error_json: str) -> bytes:
    return ("{" + HEAD + ',"error":' + error_json + "}").encode()


def nested_payload(depth: int) -> bytes:
    """An envelope nesting ``depth`` arrays/objects in all, envelope included."""
    inner = "[" * (depth - 2) + "]" * (depth - 2)
    return with_payload('{"x":' + inner + "}")


def reject(data: bytes) -> BadRequest:
    """Decode ``data``, expecting exactly BadRequest with a short message."""
    with pytest.raises(BadRequest) as info:
        codec.decode(data)
    error = info.value
    assert type(error) is BadRequest
    assert 0 < len(error.message) <= 100
    return error


# -- decoding what is valid -----------------------------------------------------


def test_decode_canonical_request() -> None:
    assert codec.decode(CANONICAL) == Envelope(**VALID)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_decode_accepts_any_bytes_like(wrap: Any) -> None:
    assert codec.decode(wrap(CANONICAL)) == Envelope(**VALID)


def test_decode_accepts_foreign_json_with_whitespace_and_any_key_order() -> None:
    foreign = (
        b'\n{ "verb" : "say_hello",\r\n\t"payload": { "name" : "Ada Lovelace" } ,\n'
        b'  "schema":"demo/v1/Name", "service": "greeter",\n'
        b'  "id": "550e8400-e29b-41d4-a716-446655440000"  }\n  '
    )
    assert codec.decode(foreign) == codec.decode(CANONICAL)


def test_decode_accepts_foreign_escapes_and_number_forms() -> None:
    env = codec.decode(with_payload('{"n": 1E2, "z": -0, "s": "\\u00e9\\ud83d\\ude00\\/"}'))
    assert env.payload == {"n": 100.0, "z": 0, "s": "é😀/"}


def test_decode_error_reply() -> None:
    env = codec.decode(with_error('{"code":"NotFound","message":"gone","details":{"a":1}}'))
    assert env.payload is None
    assert env.to_exception() == NotFound("gone", details={"a": 1})


def test_nesting_of_exactly_max_depth_is_accepted() -> None:
    env = codec.decode(nested_payload(codec.MAX_DEPTH))
    assert env.payload is not None


def test_nesting_of_objects_to_max_depth_is_accepted() -> None:
    inner = '{"a":' * (codec.MAX_DEPTH - 1) + "1" + "}" * (codec.MAX_DEPTH - 1)
    assert codec.decode(with_payload(inner)).payload is not None


def test_an_envelope_of_exactly_max_bytes_is_accepted() -> None:
    empty = with_payload('{"pad":""}')
    pad = "x" * (codec.MAX_ENVELOPE_BYTES - len(empty))
    data = with_payload('{"pad":"' + pad + '"}')
    assert len(data) == codec.MAX_ENVELOPE_BYTES
    assert codec.decode(data).payload == {"pad": pad}


# -- decoding what is not -------------------------------------------------------

UTF16_BODY = ("{" + HEAD + ',"payload":{}}').encode("utf-16-le")

REJECTED = {
    "empty": b"",
    "whitespace only": b" \n\t",
    "not utf-8": with_payload('{"name":"Ada "}').replace(b"Ada ", b"Ada \xff"),
    "latin-1 text": with_payload('{"name":"Zoë"}').decode().encode("latin-1"),
    "overlong utf-8": with_payload('{"name":"x"}').replace(b'"x"', b'"\xc0\xaf"'),
    "cesu-8 surrogate bytes": with_payload('{"name":"x"}').replace(b'"x"', b'"\xed\xa0\x80"'),
    "utf-16-le with bom": b"\xff\xfe" + UTF16_BODY,
    "utf-16-be with bom": ("{" + HEAD + ',"payload":{}}').encode("utf-16"),
    "utf-16-le without bom": UTF16_BODY,
    "utf-16-be without bom": ("{" + HEAD + ',"payload":{}}').encode("utf-16-be"),
    "utf-32": ("{" + HEAD + ',"payload":{}}').encode("utf-32"),
    "utf-8 bom": b"\xef\xbb\xbf" + CANONICAL,
    "NaN": with_payload('{"x":NaN}'),
    "Infinity": with_payload('{"x":Infinity}'),
    "-Infinity": with_payload('{"x":-Infinity}'),
    "1e400": with_payload('{"x":1e400}'),
    "-1e400": with_payload('{"x":-1e400}'),
    "400-digit integer": with_payload('{"x":1' + "0" * 400 + "}"),
    "lone high surrogate": with_payload('{"x":"\\ud800"}'),
    "lone low surrogate": with_payload('{"x":"\\udc00"}'),
    "high surrogate then letter": with_payload('{"x":"\\ud800a"}'),
    "surrogate in a key": with_payload('{"\\ud800":1}'),
    "duplicate top-level key": CANONICAL.replace(b'"verb"', b'"verb":"say_hello","verb"'),
    "duplicate top-level key, different values": b'{"verb":"x",' + CANONICAL[1:],
    "duplicate payload key": with_payload('{"name":"Ada","name":"Bob"}'),
    "duplicate payload key, same value": with_payload('{"name":"Ada","name":"Ada"}'),
    "duplicate deep key with whitespace": with_payload('{ "a" : [ { "k" : 1 ,  "k" : 2 } ] }'),
    "duplicate key via escape": with_payload('{"a":1,"\\u0061":2}'),
    "duplicate error member": with_error('{"code":"Internal","message":"a","message":"b"}'),
    "unknown top-level field": CANONICAL[:-1] + b',"trace":"abc"}',
    "both payload and error": CANONICAL[:-1] + b',"error":{"code":"Internal","message":"m"}}',
    "neither payload nor error": ("{" + HEAD + "}").encode(),
    "payload null": ("{" + HEAD + ',"payload":null}').encode(),
    "payload null beside an error": with_error('{"code":"Internal","message":"m"}')[:-1]
    + b',"payload":null}',
    "error null beside a payload": CANONICAL[:-1] + b',"error":null}',
    "payload an array": with_payload("[]"),
    "payload a string": with_payload('"Ada"'),
    "too deep": nested_payload(codec.MAX_DEPTH + 1),
    "too deep objects": with_payload('{"a":' * codec.MAX_DEPTH + "1" + "}" * codec.MAX_DEPTH),
    "2 MB body": with_payload('{"pad":"' + "x" * 2_000_000 + '"}'),
    "top-level array": b"[" + CANONICAL + b"]",
    "top-level string": b'"envelope"',
    "top-level number": b"42",
    "top-level null": b"null",
    "top-level true": b"true",
    "trailing garbage": CANONICAL + b"x",
    "two documents": CANONICAL + CANONICAL,
    "truncated": CANONICAL[:-1],
    "single quotes": CANONICAL.replace(b'"', b"'"),
    "trailing comma": CANONICAL[:-1] + b",}",
    "comment": b"/* hi */" + CANONICAL,
    "raw control character in string": with_payload('{"name":"a\tb"}'),
    "bad error: unknown code": with_error('{"code":"Teapot","message":"m"}'),
    "bad error: lower-case code": with_error('{"code":"badrequest","message":"m"}'),
    "bad error: code is an array": with_error('{"code":["Internal"],"message":"m"}'),
    "bad error: code is an object": with_error('{"code":{"Internal":1},"message":"m"}'),
    "bad error: missing code": with_error('{"message":"m"}'),
    "bad error: missing message": with_error('{"code":"Internal"}'),
    "bad error: message not a string": with_error('{"code":"Internal","message":["m"]}'),
    "bad error: extra member": with_error('{"code":"Internal","message":"m","stack":"..."}'),
    "bad error: details not an object": with_error('{"code":"Internal","message":"m","details":1}'),
    "bad error: not an object": with_error('"Internal"'),
    "bad id": CANONICAL.replace(ID.encode(), b"not-a-uuid"),
    "id not a string": CANONICAL.replace(f'"{ID}"'.encode(), b"1"),
    "bad service": CANONICAL.replace(b'"greeter"', b'"Greeter"'),
    "bad verb": CANONICAL.replace(b'"say_hello"', b'"say-hello"'),
    "bad schema": CANONICAL.replace(b'"demo/v1/Name"', b'"demo/Name"'),
}


@pytest.mark.parametrize("data", REJECTED.values(), ids=REJECTED.keys())
def test_decode_rejects_with_bad_request(data: bytes) -> None:
    reject(data)


@pytest.mark.parametrize("field", ["id", "service", "verb", "schema"])
def test_missing_required_field_is_named(field: str) -> None:
    obj = {k: v for k, v in VALID.items() if k != field}
    error = reject(json.dumps(obj).encode())
    assert error.details == {"field": field, "constraint": "required"}
    assert f"'{field}'" in error.message


def test_too_deep_reports_the_limit() -> None:
    error = reject(nested_payload(codec.MAX_DEPTH + 1))
    assert error.details == {"constraint": "maxDepth", "limit": codec.MAX_DEPTH}


def test_too_large_reports_the_limit() -> None:
    error = reject(with_payload('{"pad":"' + "x" * 2_000_000 + '"}'))
    assert error.details == {"constraint": "maxBytes", "limit": codec.MAX_ENVELOPE_BYTES}


def test_one_byte_over_max_bytes_is_rejected() -> None:
    empty = with_payload('{"pad":""}')
    data = with_payload('{"pad":"' + "x" * (codec.MAX_ENVELOPE_BYTES - len(empty) + 1) + '"}')
    assert len(data) == codec.MAX_ENVELOPE_BYTES + 1
    reject(data)


def test_unknown_fields_are_listed() -> None:
    error = reject(CANONICAL[:-1] + b',"zzz":1,"trace":2}')
    assert error.details == {"fields": ["trace", "zzz"]}


def test_malformed_json_message_does_not_echo_the_input() -> None:
    error = reject(with_payload('{"secret":"hunter2" oops}'))
    assert "hunter2" not in str(error)


# -- encoding -------------------------------------------------------------------


def test_encode_is_compact_sorted_canonical_json() -> None:
    assert codec.encode(Envelope(**VALID)) == CANONICAL


def test_encode_is_deterministic() -> None:
    env = Envelope(**VALID)
    assert codec.encode(env) == codec.encode(env) == codec.encode(Envelope(**VALID))


def test_key_insertion_order_does_not_change_the_bytes() -> None:
    one = {"b": 1, "a": {"y": [1, {"q": 1, "p": 2}], "x": None}}
    two = {"a": {"x": None, "y": [1, {"p": 2, "q": 1}]}, "b": 1}
    assert list(one) != list(two)
    env_one = Envelope.request("s", "v", one, schema="demo/v1/T", id=ID)
    env_two = Envelope.request("s", "v", two, schema="demo/v1/T", id=ID)
    assert codec.encode(env_one) == codec.encode(env_two)
    assert b'{"p":2,"q":1}' in codec.encode(env_one)


def test_encode_has_no_insignificant_whitespace() -> None:
    data = codec.encode(Envelope.request("s", "v", {"a": [1, 2], "b": {}}, schema="d1/v1/T", id=ID))
    assert b" " not in data and b"\n" not in data
    assert b'"payload":{"a":[1,2],"b":{}}' in data


def test_encode_keeps_non_ascii_as_utf8() -> None:
    text = "Zoë Ørsted 日本 😀"
    data = codec.encode(Envelope.request("s", "v", {"name": text}, schema="demo/v1/T", id=ID))
    assert text.encode("utf-8") in data
    assert b"\\u" not in data
    assert codec.decode(data).payload == {"name": text}


def test_encode_then_decode_gives_back_an_error_reply() -> None:
    request = Envelope(**VALID)
    reply = request.error_reply(NotFound("gone", details={"field": "name"}))
    assert codec.decode(codec.encode(reply)) == reply


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    "place",
    [
        lambda v: {"x": v},
        lambda v: {"x": [1, {"y": v}]},
        lambda v: {"x": (v,)},
    ],
    ids=["top", "nested", "in a tuple"],
)
def test_encode_refuses_non_finite_numbers(value: float, place: Any) -> None:
    env = Envelope.request("s", "v", place(value), schema="demo/v1/T", id=ID)
    with pytest.raises(Internal):
        codec.encode(env)


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, b"bytes", 2**64, -(2**63) - 1, {1: "non-string key"}],
    ids=["object", "set", "bytes", "2**64", "below int64", "int key"],
)
def test_encode_refuses_values_json_cannot_hold(value: Any) -> None:
    env = Envelope.request("s", "v", {"x": value}, schema="demo/v1/T", id=ID)
    with pytest.raises(Internal) as info:
        codec.encode(env)
    assert type(info.value) is Internal


def test_encode_refuses_lone_surrogates_in_text() -> None:
    env = Envelope.request("s", "v", {"x": "\ud800"}, schema="demo/v1/T", id=ID)
    with pytest.raises(Internal):
        codec.encode(env)


def test_null_in_a_payload_is_fine() -> None:
    env = Envelope.request("s", "v", {"x": None, "y": [None]}, schema="demo/v1/T", id=ID)
    assert codec.decode(codec.encode(env)) == env
