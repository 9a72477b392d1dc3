"""codec.decode_reply: the client's check of a reply to its own request."""

from __future__ import annotations

import pytest

from cbs.contracts import Envelope, NotFound, WrongReply, codec

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
        # bad schema, payload not an object, both payload and error
        codec.encode(REQUEST.reply({})).replace(b"demo/v1/Name", b"Bad Schema"),
        codec.encode(REQUEST.reply({})).replace(b'"payload":{}', b'"payload":[]'),
        codec.encode(REQUEST.reply({})).replace(
            b'"payload":{}', b'"error":{"code":"Internal","message":"x"},"payload":{}'
        ),
    ],
)
def test_anything_else_is_a_wrong_reply(data: bytes) -> None:
    """Not an answer to this request: the bus drops it and keeps waiting."""
    with pytest.raises(WrongReply):
        codec.decode_reply(data, REQUEST)


@pytest.mark.parametrize("where", ["first", "last"])
def test_unknown_fields_of_a_newer_peer_are_ignored(where: str) -> None:
    """Whatever their number or place in the bytes, extra fields do not make a
    reply unreadable (no fast path depends on field count or key order)."""
    reply = REQUEST.reply({"message": "hi"}, schema="demo/v1/Greeting")
    extra = {"aaa_future": 1} if where == "first" else {"zzz_future": {"x": [1]}, "yyy": 2}
    assert codec.decode_reply(codec.encode(reply, extra=extra), REQUEST) == reply
    error = REQUEST.error_reply(NotFound("gone"))
    assert codec.decode_reply(codec.encode(error, extra=extra), REQUEST) == error
