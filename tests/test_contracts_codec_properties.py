"""Property tests of the codec: lossless round trip, total decoder, and
agreement with the envelope JSON Schema."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, find, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, ValidationError, validators

from cbs.contracts import ERROR_CODES, BadRequest, Envelope, codec, load_schema

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# -- strategies -----------------------------------------------------------------

ids = st.uuids(version=4).map(str) | st.uuids(version=4).map(lambda u: str(u).upper())
names = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
schemas = st.from_regex(
    r"[a-z][a-z0-9_]{1,10}/v[0-9]{1,3}/[A-Za-z][A-Za-z0-9_]{0,10}", fullmatch=True
)
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=25,
)
objects = st.dictionaries(texts, json_values, max_size=5)


@st.composite
def wire_errors(draw: st.DrawFn) -> dict[str, Any]:
    error: dict[str, Any] = {"code": draw(st.sampled_from(sorted(ERROR_CODES)))}
    error["message"] = draw(texts)
    if draw(st.booleans()):
        error["details"] = draw(objects)
    return error


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    body = {"payload": draw(objects)} if draw(st.booleans()) else {"error": draw(wire_errors())}
    return Envelope(
        id=draw(ids), service=draw(names), verb=draw(names), schema=draw(schemas), **body
    )


def decodes(data: bytes) -> bool:
    """True if ``data`` decodes; False on BadRequest; anything else propagates."""
    try:
        codec.decode(data)
    except BadRequest as error:
        assert type(error) is BadRequest
        return False
    return True


# -- (a) lossless round trip ----------------------------------------------------


@SETTINGS
@given(envelopes())
def test_round_trip_is_lossless_and_stable(env: Envelope) -> None:
    data = codec.encode(env)
    back = codec.decode(data)
    assert back == env
    assert codec.encode(back) == data
    assert codec.encode(env) == data


@SETTINGS
@given(envelopes())
def test_encoding_is_strict_utf8_json_the_stdlib_reads_the_same(env: Envelope) -> None:
    data = codec.encode(env)
    assert json.loads(data.decode("utf-8")) == env.to_dict()


# -- (b) the decoder is total ---------------------------------------------------


@SETTINGS
@given(st.binary(max_size=300))
def test_decoder_is_total_on_arbitrary_bytes(data: bytes) -> None:
    decodes(data)


TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b"\\",
    b",",
    b":",
    b" ",
    b"null",
    b"true",
    b"0",
    b"-1",
    b"1e400",
    b"NaN",
    b"Infinity",
    b'"\\ud800"',
    b"\\u0000",
    b"\xff",
    b"\xef\xbb\xbf",
    b"\x00",
    b'"id"',
    b'"payload"',
    b'"error"',
    b'"code":[]',
    b'"code":{}',
    b'"x":1,"x":2',
    b'{"code":"Internal","message":"m"}',
    b"[" * 100,
    b"{}",
    b"[]",
    b"\n",
]


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> bytes:
    """A valid envelope's bytes with a few random splices, deletions and swaps."""
    data = bytearray(codec.encode(draw(envelopes())))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        if kind == "insert":
            data[at:at] = draw(st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            data[at : at + 1] = draw(st.sampled_from(TOKENS))
    return bytes(data)


@SETTINGS
@given(mutated_envelopes())
def test_decoder_is_total_on_mutated_envelopes(data: bytes) -> None:
    decodes(data)


@SETTINGS
@given(json_values)
def test_decoder_is_total_on_arbitrary_json_values(value: Any) -> None:
    decodes(orjson.dumps(value))


# -- (c) the nasty list ---------------------------------------------------------

ID = "550e8400-e29b-41d4-a716-446655440000"
HEAD = f'{{"id":"{ID}","service":"greeter","verb":"say_hello","schema":"demo/v1/Name",'

NASTY = {
    "deep nesting 10_000": (HEAD + '"payload":{"x":' + "[" * 10_000 + "]" * 10_000 + "}}").encode(),
    "deep nesting 10_000 unbalanced": b"[" * 10_000,
    "deep objects 10_000": (HEAD + '"payload":' + '{"a":' * 10_000 + "1" + "}" * 10_001).encode(),
    "lone surrogate": (HEAD + '"payload":{"x":"\\ud800"}}').encode(),
    "NaN": (HEAD + '"payload":{"x":NaN}}').encode(),
    "duplicate keys": (HEAD + '"payload":{"x":1,"x":1}}').encode(),
    "utf-16 bom": (HEAD + '"payload":{}}').encode("utf-16"),
    "2 MB body": (HEAD + '"payload":{"x":"' + "a" * 2 * 1024 * 1024 + '"}}').encode(),
    "empty bytes": b"",
    "null": b"null",
}


@pytest.mark.parametrize("data", NASTY.values(), ids=NASTY.keys())
def test_nasty_input_is_a_bad_request(data: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        codec.decode(data)
    assert type(info.value) is BadRequest


# -- (d) the codec and the JSON Schema agree ------------------------------------


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """JSON Schema patterns are ECMA-262 regexes, where ``$`` matches only at the
    very end; Python's ``$`` also matches before a final newline. Use ``\\Z``."""
    ecma = re.sub(r"\$$", r"\\Z", pattern)
    if validator.is_type(instance, "string") and not re.search(ecma, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaValidator = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})
ENVELOPE_VALIDATOR = EcmaValidator(load_schema("envelope"))


def test_ecma_validator_rejects_a_trailing_newline_that_python_re_would_accept() -> None:
    obj = {"id": ID, "service": "greeter\n", "verb": "v", "schema": "demo/v1/T", "payload": {}}
    assert Draft202012Validator(load_schema("envelope")).is_valid(obj)  # the re quirk
    assert not ENVELOPE_VALIDATOR.is_valid(obj)
    assert not decodes(orjson.dumps(obj))


def _near_strings(valid: str) -> st.SearchStrategy[str]:
    return st.sampled_from(
        [valid + "\n", valid.upper(), valid + "-", "", " " + valid, valid[:-1], valid + "_1"]
    )


# Values of the wrong type, or empty, that every field should meet often.
odd_values = st.none() | st.sampled_from(
    [True, 0, -1.5, "", [], {}, ["Internal"], {"code": "Internal"}]
)

FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "id": ids | st.uuids(version=1).map(str),
    "service": names,
    "verb": names,
    "schema": schemas,
    "payload": objects,
    "error": wire_errors(),
}


@st.composite
def near_envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """A valid envelope dict, or one with a field removed, added or changed."""
    obj = draw(envelopes()).to_dict()
    mutation = draw(
        st.sampled_from(["none", "remove", "add other", "add unknown", "replace", "error member"])
    )
    if mutation == "remove":
        del obj[draw(st.sampled_from(sorted(obj)))]
    elif mutation == "add other":  # whichever of payload and error is absent
        key = "error" if "payload" in obj else "payload"
        obj[key] = draw(FIELD_VALUES[key] | odd_values)
    elif mutation == "add unknown":
        obj[draw(texts.filter(lambda k: k not in codec.FIELDS))] = draw(json_values)
    elif mutation == "replace":
        key = draw(st.sampled_from(sorted(obj)))
        near = _near_strings(obj[key]) if isinstance(obj[key], str) else st.nothing()
        obj[key] = draw(FIELD_VALUES[key] | near | odd_values | json_values)
    elif mutation == "error member":
        error = dict(obj.pop("error", None) or draw(wire_errors()))
        obj.pop("payload", None)
        member = draw(st.sampled_from(["code", "message", "details", "stack"]))
        if draw(st.booleans()):
            error.pop(member, None)
        else:
            error[member] = draw(st.sampled_from(sorted(ERROR_CODES)) | odd_values | json_values)
        obj["error"] = error
    return obj


REQUEST = {"id": ID, "service": "greeter", "verb": "say_hello", "schema": "demo/v1/Name"}
ERROR = {"code": "BadRequest", "message": "m"}


@SETTINGS
@given(near_envelopes())
@example({**REQUEST, "payload": {}, "error": None})
@example({**REQUEST, "payload": None, "error": ERROR})
@example({**REQUEST, "error": {"code": [], "message": "m"}})
@example({**REQUEST, "error": {"code": {}, "message": "m"}})
@example({**REQUEST, "service": "greeter\n", "payload": {}})
@example({**REQUEST, "error": {**ERROR, "details": None}})
def test_codec_accepts_exactly_what_the_schema_accepts(obj: dict[str, Any]) -> None:
    assert decodes(orjson.dumps(obj)) == ENVELOPE_VALIDATOR.is_valid(obj)


def test_near_envelopes_yield_both_valid_and_invalid_envelopes() -> None:
    """Guards the agreement test against a strategy that only yields one side."""
    assert ENVELOPE_VALIDATOR.is_valid(find(near_envelopes(), ENVELOPE_VALIDATOR.is_valid))
    invalid = find(near_envelopes(), lambda obj: not ENVELOPE_VALIDATOR.is_valid(obj))
    assert not decodes(orjson.dumps(invalid))
