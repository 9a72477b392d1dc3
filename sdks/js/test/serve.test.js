import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { connect } from "@nats-io/transport-node";

import { Cell, serve } from "../src/index.js";
import { greet } from "../examples/greet.js";
import { bytes, parse, request, startNatsServer } from "./helpers.js";

let server;
let nc;
before(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
});
after(async () => {
  await nc?.close();
  server?.stop();
});

test("greet answers, and refuses as the Python cell does", async () => {
  const runtime = await serve([greet], { servers: server.url });
  try {
    const ok = request("greeter", "say_hello", { name: "Ada" }, "demo/v1/Name");
    const reply = parse(await nc.request("cbs.greeter.say_hello", bytes(ok), { timeout: 2000 }));
    assert.deepEqual(reply, {
      id: ok.id,
      service: "greeter",
      verb: "say_hello",
      schema: "demo/v1/Greeting",
      payload: { message: "Hello Ada!" },
    });
    const missing = request("greeter", "say_hello", {}, "demo/v1/Name");
    const refused = await nc.request("cbs.greeter.say_hello", bytes(missing), { timeout: 2000 });
    assert.deepEqual(parse(refused), {
      id: missing.id,
      service: "greeter",
      verb: "say_hello",
      schema: "demo/v1/Error",
      error: {
        code: "BadRequest",
        message: "Missing required field 'name'",
        details: { field: "name", constraint: "required" },
      },
    });
    assert.equal(refused.headers.get("Nats-Service-Error-Code"), "400");
    const wrong = request("greeter", "say_hello", { name: "x" }, "demo/v1/Other");
    const unsupported = parse(await nc.request("cbs.greeter.say_hello", bytes(wrong), { timeout: 2000 }));
    assert.equal(unsupported.error.message, "Unsupported schema 'demo/v1/Other'");
    const garbled = parse(await nc.request("cbs.greeter.say_hello", bytes("{oops"), { timeout: 2000 }));
    assert.equal(garbled.error.code, "BadRequest");
    assert.equal(garbled.error.message, "Malformed JSON");
  } finally {
    await runtime.stop();
  }
});

test("a handler's unexpected failure is Internal, with no detail on the wire", async () => {
  const broken = new Cell({ id: "broken", category: "logic", version: "1.0.0", purpose: "fails" });
  broken.verb("go", { schema: "test/v1/Go" }, async () => {
    throw new Error("secret detail");
  });
  const quiet = { error() {} };
  const runtime = await serve([broken], { servers: server.url, log: quiet });
  try {
    const reply = parse(await nc.request("cbs.broken.go", bytes(request("broken", "go", {}, "test/v1/Go")), { timeout: 2000 }));
    assert.deepEqual(reply.error, { code: "Internal", message: "Internal error" });
  } finally {
    await runtime.stop();
  }
});

test("ADR-32 discovery shows the cell, its schemas and its language", async () => {
  const runtime = await serve([greet], { servers: server.url });
  try {
    const infos = [];
    const inbox = nc.subscribe("_INBOX.disco", { callback: (_, m) => infos.push(parse(m)) });
    nc.publish("$SRV.INFO.greet", new Uint8Array(), { reply: "_INBOX.disco" });
    const deadline = Date.now() + 2000;
    while (infos.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    inbox.unsubscribe();
    assert.equal(infos.length, 1);
    const info = infos[0];
    assert.equal(info.type, "io.nats.micro.v1.info_response");
    assert.equal(info.name, "greet");
    assert.equal(info.metadata["cbs.language"], "javascript");
    assert.equal(info.metadata["cbs.service"], "greeter");
    assert.equal(info.metadata["cbs.category"], "logic");
    assert.deepEqual(info.endpoints[0], {
      name: "say_hello",
      subject: "cbs.greeter.say_hello",
      queue_group: "greeter",
      metadata: { "cbs.schema": "demo/v1/Name", "cbs.reply_schema": "demo/v1/Greeting" },
    });
  } finally {
    await runtime.stop();
  }
});

test("stop drains: a request in flight still gets its reply", async () => {
  let release;
  const gate = new Promise((r) => (release = r));
  const slow = new Cell({ id: "slow", category: "logic", version: "1.0.0", purpose: "waits" });
  slow.verb("wait", { schema: "test/v1/Wait" }, async () => {
    await gate;
    return { done: true };
  });
  const runtime = await serve([slow], { servers: server.url });
  const pending = nc.request("cbs.slow.wait", bytes(request("slow", "wait", {}, "test/v1/Wait")), { timeout: 5000 });
  while (runtime.inFlight === 0) await new Promise((r) => setTimeout(r, 10));
  const stopped = runtime.stop();
  release();
  assert.deepEqual(parse(await pending).payload, { done: true });
  await stopped;
});

test("a supervised sidecar beats on its pipe and drains on SIGTERM", async () => {
  const script = fileURLToPath(new URL("../examples/greet.js", import.meta.url));
  const child = spawn(process.execPath, [script], {
    env: { ...process.env, NATS_URL: server.url, CBS_POOL_HEARTBEAT_FD: "3", CBS_POOL_HEARTBEAT: "0.1" },
    stdio: ["ignore", "ignore", "ignore", "pipe"],
  });
  const beats = [];
  let buffered = "";
  child.stdio[3].on("data", (chunk) => {
    buffered += chunk;
    const lines = buffered.split("\n");
    buffered = lines.pop();
    beats.push(...lines.map((l) => JSON.parse(l)));
  });
  const exited = new Promise((r) => child.on("exit", (code) => r(code)));
  try {
    const deadline = Date.now() + 10000;
    while (beats.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(beats.length >= 3, "heartbeats arrive");
    assert.deepEqual(beats[0], { state: "serving", busy: 0, queue: 0 });
    process.kill(child.pid, "SIGTERM");
    assert.equal(await exited, 0);
    assert.equal(beats.at(-1).state, "draining");
  } finally {
    if (child.exitCode === null) process.kill(child.pid, "SIGKILL");
  }
});
