"""codec.decode_reply: the client's check of a reply to its own request."""

from __future__ import annotations

import pytest

from cbs.contracts import BadRequest, Envelope, NotFound, codec

REQUEST = Envelope.request("greeter", "say_hello", {"name": "Ada"}, schema="demo/v1/Name")


def test_a_successful_reply_decodes_like_decode() -> None:
    reply = REQUEST.reply({"message": "Hello Ada!"}, schema="demo/v1/Greeting")
    data = codec.encode(reply)
    assert codec.decode_reply(data, REQUEST) == codec.decode(data) == reply


def test_an_error_reply_decodes_in_full() -> None:
    reply = REQUEST.error_reply(NotFound("gone", details={"k": 1}))
    assert codec.decode_reply(codec.encode(reply), REQUEST) == reply


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        # another request's reply
        codec.encode(Envelope.request("greeter", "say_hello", {}, schema="demo/v1/Name").reply({})),
        # same id, other verb
        codec.encode(Envelope(REQUEST.id, "greeter", "other", "demo/v1/Name", payload={})),
        # bad schema, payload not an object, unknown field
        codec.encode(REQUEST.reply({})).replace(b"demo/v1/Name", b"Bad Schema"),
        codec.encode(REQUEST.reply({})).replace(b'"payload":{}', b'"payload":[]'),
        codec.encode(REQUEST.reply({})).replace(b'"payload":{}', b'"payload":{},"x":1'),
    ],
)
def test_anything_else_is_bad_request(data: bytes) -> None:
    with pytest.raises(BadRequest):
        codec.decode_reply(data, REQUEST)
