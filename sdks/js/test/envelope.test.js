import assert from "node:assert/strict";
import { test } from "node:test";

import { CbsError, decodeRequest, encode } from "../src/index.js";
import { bytes, request } from "./helpers.js";

const good = request("greeter", "say_hello", { name: "Ada" }, "demo/v1/Name");

function rejects(data, message) {
  assert.throws(
    () => decodeRequest(data instanceof Uint8Array ? data : bytes(data)),
    (err) => err instanceof CbsError && err.code === "BadRequest" && err.message.includes(message),
  );
}

test("a valid request decodes", () => {
  assert.deepEqual(decodeRequest(bytes(good)), good);
});

test("what the CBS codec rejects is a BadRequest", () => {
  rejects("{not json", "Malformed JSON");
  rejects("[1]", "must be a JSON object");
  rejects({ ...good, extra: 1 }, "Unknown envelope field 'extra'");
  rejects({ ...good, id: "not-a-uuid" }, "'id'");
  rejects({ ...good, service: "Greeter" }, "'service'");
  rejects({ ...good, schema: "demo/Name" }, "'schema'");
  rejects({ ...good, payload: [1] }, "payload");
  rejects(new Uint8Array([0x7b, 0xff, 0x7d]), "UTF-8");
  rejects(`{"id":"${good.id}","id":"${good.id}","service":"greeter","verb":"say_hello","schema":"demo/v1/Name","payload":{}}`, "Duplicate");
  let deep = {};
  for (let i = 0; i < 70; i++) deep = { d: deep };
  rejects({ ...good, payload: deep }, "nested too deeply");
  rejects(new Uint8Array(1024 * 1024 + 1), "too large");
});

test("encoding sorts keys at every level", () => {
  const text = new TextDecoder().decode(encode({ b: 1, a: { d: 2, c: 3 } }));
  assert.equal(text, '{"a":{"c":3,"d":2},"b":1}');
});
