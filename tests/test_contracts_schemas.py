"""The JSON Schemas: valid Draft 2020-12, shipped as package data, and matching
the contract examples and the manifests that real cells produce."""

from __future__ import annotations

import configparser
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from cbs.contracts import BadRequest, Envelope, codec, load_schema
from cbs.greeter.cells import make_greet, make_print_greeting, make_prompt_name
from cbs.kernel import Cell

# The two examples of docs/contracts.md, copied literally.
CONTRACT_REQUEST = """
    {"id": "550e8400-e29b-41d4-a716-446655440000", "service": "greeter",
     "verb": "say_hello", "schema": "demo/v1/Name", "payload": {"name": "Ada Lovelace"}}
"""
CONTRACT_ERROR_REPLY = """
    {"id": "550e8400-e29b-41d4-a716-446655440000", "service": "greeter",
     "verb": "say_hello", "schema": "demo/v1/Error",
     "error": {"code": "BadRequest", "message": "Missing required field 'name'",
               "details": {"field": "name", "constraint": "required"}}}
"""


@pytest.fixture(scope="module")
def envelope_validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema("envelope"))


@pytest.fixture(scope="module")
def manifest_validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema("manifest"))


# -- the schema files -----------------------------------------------------------


@pytest.mark.parametrize("name", ["envelope", "manifest"])
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_unknown_schema_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown schema"):
        load_schema("nope")


@pytest.mark.parametrize("name", ["envelope", "manifest"])
def test_schema_files_are_package_resources(name: str) -> None:
    resource = resources.files("cbs.contracts.schemas").joinpath(f"{name}.schema.json")
    assert resource.is_file()
    assert json.loads(resource.read_text("utf-8")) == load_schema(name)


def test_schema_files_are_declared_as_package_data() -> None:
    setup_cfg = configparser.ConfigParser()
    setup_cfg.read(Path(__file__).parents[1] / "setup.cfg")
    assert "cbs.contracts.schemas" in setup_cfg["options"]["packages"]
    assert setup_cfg["options.package_data"]["cbs.contracts.schemas"].strip() == "*.json"


# -- the contract examples ------------------------------------------------------


def test_contract_request_example_validates_and_decodes(
    envelope_validator: Draft202012Validator,
) -> None:
    envelope_validator.validate(json.loads(CONTRACT_REQUEST))
    env = codec.decode(CONTRACT_REQUEST.encode())
    assert env.subject == "cbs.greeter.say_hello"
    assert env.unwrap() == {"name": "Ada Lovelace"}


def test_contract_error_reply_example_validates_and_decodes(
    envelope_validator: Draft202012Validator,
) -> None:
    envelope_validator.validate(json.loads(CONTRACT_ERROR_REPLY))
    env = codec.decode(CONTRACT_ERROR_REPLY.encode())
    assert env.schema == "demo/v1/Error"
    assert env.to_exception() == BadRequest(
        "Missing required field 'name'", details={"field": "name", "constraint": "required"}
    )


def test_envelopes_made_by_the_constructors_validate(
    envelope_validator: Draft202012Validator,
) -> None:
    request = Envelope.request("greeter", "say_hello", {"name": "Ada"}, schema="demo/v1/Name")
    for env in (request, request.reply({"message": "Hi"}), request.error_reply(BadRequest())):
        envelope_validator.validate(json.loads(codec.encode(env)))


# -- manifests ------------------------------------------------------------------


def kernel_cell() -> Cell:
    cell = Cell(
        "greet",
        service="greeter",
        category="logic",
        version="1.0.0",
        purpose="Greets a person by name",
        publishes=["cbs.audit.greeted"],
    )

    @cell.verb("say_hello", schema="demo/v1/Name", reply_schema="demo/v1/Greeting")
    async def say_hello(payload: dict[str, Any]) -> dict[str, Any]:
        return {"message": f"Hello {payload['name']}!"}

    @cell.verb("ping", schema="demo/v1/Ping")
    async def ping(payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    return cell


def test_kernel_cell_manifest_validates(manifest_validator: Draft202012Validator) -> None:
    manifest = kernel_cell().manifest()
    manifest_validator.validate(manifest)
    assert manifest["interface"]["publishes"] == ["cbs.audit.greeted"]
    assert manifest["interface"]["serves"][1] == {
        "subject": "cbs.greeter.ping",
        "queue_group": "greeter",
        "schema": "demo/v1/Ping",
    }


@pytest.mark.parametrize(
    ("make", "subject"),
    [
        (make_prompt_name, "cbs.prompt_name.read"),
        (make_greet, "cbs.greeter.say_hello"),
        (make_print_greeting, "cbs.printer.write"),
    ],
)
def test_greeter_cell_manifests_validate(
    manifest_validator: Draft202012Validator, make: Any, subject: str
) -> None:
    manifest = make().manifest()
    manifest_validator.validate(manifest)
    assert [s["subject"] for s in manifest["interface"]["serves"]] == [subject]


def _with(path: str, value: Any) -> dict[str, Any]:
    """The kernel cell's manifest with the member at ``path`` (a.b.0.c) set or,
    for ``...``, removed."""
    manifest = kernel_cell().manifest()
    *parents, last = path.split(".")
    target: Any = manifest
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return manifest


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("category", "business"),
        ("category", "IO"),
        ("version", "1.0"),
        ("version", "v1.0.0"),
        ("version", "01.0.0"),
        ("version", "1.0.0.0"),
        ("version", "latest"),
        ("id", "Greet"),
        ("name", ""),
        ("language", "Python"),
        ("purpose", None),
        ("interface", ...),
        ("category", ...),
        ("owner", "someone"),
        ("interface.serves.0.subject", "greeter.say_hello"),
        ("interface.serves.0.subject", "cbs.greeter.say_hello.v2"),
        ("interface.serves.0.queue_group", "Greeter"),
        ("interface.serves.0.schema", "demo/Name"),
        ("interface.serves.0.reply_schema", "Greeting"),
        ("interface.serves.0.schema", ...),
        ("interface.serves.0.extra", 1),
        ("interface.publishes", ["audit"]),
        ("interface.serves", ...),
    ],
)
def test_invalid_manifest_is_rejected(
    manifest_validator: Draft202012Validator, path: str, value: Any
) -> None:
    assert not manifest_validator.is_valid(_with(path, value))


@pytest.mark.parametrize("version", ["0.1.0", "1.0.0-rc.1", "2.10.3+build.5", "1.0.0-alpha+001"])
def test_semver_versions_are_accepted(
    manifest_validator: Draft202012Validator, version: str
) -> None:
    assert manifest_validator.is_valid(_with("version", version))
