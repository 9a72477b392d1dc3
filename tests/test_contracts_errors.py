"""The CBS error hierarchy and its 1:1 mapping to the wire ``error`` object."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbs.contracts import (
    ERROR_CODES,
    BadRequest,
    CbsError,
    Internal,
    NotFound,
    Timeout,
    Unavailable,
)

ERROR_CLASSES = [BadRequest, Timeout, NotFound, Internal, Unavailable]
WIRE_CODES = {"BadRequest", "Timeout", "NotFound", "Internal", "Unavailable"}
DETAILS = {"field": "name", "constraint": "required", "nested": {"limit": [1, 2.5, None]}}


@pytest.mark.parametrize("cls", ERROR_CLASSES)
def test_every_error_class_has_the_single_root_cbs_error(cls: type[CbsError]) -> None:
    assert issubclass(cls, CbsError)
    assert issubclass(cls, Exception)
    assert cls is not CbsError


def test_there_is_exactly_one_class_per_wire_code() -> None:
    assert set(ERROR_CODES) == WIRE_CODES
    assert set(ERROR_CODES.values()) == set(ERROR_CLASSES)
    for code, cls in ERROR_CODES.items():
        assert cls.code == code == cls.__name__


@pytest.mark.parametrize("cls", ERROR_CLASSES)
def test_wire_round_trip_without_details(cls: type[CbsError]) -> None:
    error = cls("Something went wrong")
    wire = error.to_wire()
    assert wire == {"code": cls.code, "message": "Something went wrong"}
    back = CbsError.from_wire(wire)
    assert type(back) is cls
    assert back.message == "Something went wrong"
    assert back.details is None
    assert back == error
    assert back.to_wire() == wire


@pytest.mark.parametrize("cls", ERROR_CLASSES)
def test_wire_round_trip_with_details(cls: type[CbsError]) -> None:
    error = cls("Missing required field 'name'", details=DETAILS)
    wire = error.to_wire()
    assert wire == {
        "code": cls.code,
        "message": "Missing required field 'name'",
        "details": DETAILS,
    }
    back = CbsError.from_wire(wire)
    assert type(back) is cls
    assert back.details == DETAILS
    assert back == error
    assert back.to_wire() == wire


@pytest.mark.parametrize("cls", ERROR_CLASSES)
def test_wire_object_with_empty_details_survives_the_round_trip(cls: type[CbsError]) -> None:
    wire: dict[str, Any] = {"code": cls.code, "message": "m", "details": {}}
    assert CbsError.from_wire(wire).to_wire() == wire


wire_details = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=8,
    ),
    max_size=4,
)


@settings(max_examples=200, database=None)
@given(
    code=st.sampled_from(sorted(ERROR_CODES)),
    message=st.text(max_size=30),
    details=st.none() | wire_details,
)
def test_any_wire_error_survives_from_wire_then_to_wire(
    code: str, message: str, details: dict[str, Any] | None
) -> None:
    wire: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        wire["details"] = details
    error = CbsError.from_wire(wire)
    assert type(error) is ERROR_CODES[code]
    assert error.to_wire() == wire


@pytest.mark.parametrize("cls", ERROR_CLASSES)
def test_default_message_is_used_when_none_is_given(cls: type[CbsError]) -> None:
    error = cls()
    assert error.message == cls.default_message
    assert error.message


def test_details_are_copied_from_the_callers_mapping() -> None:
    details = {"field": "name"}
    error = BadRequest("bad", details=details)
    details["field"] = "changed"
    assert error.details == {"field": "name"}


def test_from_wire_falls_back_to_internal_for_an_unknown_code() -> None:
    error = CbsError.from_wire({"code": "Teapot", "message": "short and stout"})
    assert type(error) is Internal
    assert error.message == "short and stout"


def test_timeout_is_also_a_builtin_timeout_error() -> None:
    assert issubclass(Timeout, TimeoutError)
    with pytest.raises(TimeoutError):
        raise Timeout("No reply in 2s")
    assert not issubclass(NotFound, TimeoutError)


@pytest.mark.parametrize("cls", ERROR_CLASSES)
def test_str_is_code_colon_message(cls: type[CbsError]) -> None:
    assert str(cls("Field 'id' must be a UUID v4")) == f"{cls.code}: Field 'id' must be a UUID v4"
    assert str(cls()) == f"{cls.code}: {cls.default_message}"


def test_equality_compares_code_message_and_details() -> None:
    assert BadRequest("x", details={"a": 1}) == BadRequest("x", details={"a": 1})
    assert BadRequest("x") != NotFound("x")
    assert BadRequest("x") != BadRequest("y")
    assert BadRequest("x", details={"a": 1}) != BadRequest("x", details={"a": 2})
    assert BadRequest("x") != "BadRequest: x"
