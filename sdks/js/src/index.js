// @cbs/cell: CBS cells in JavaScript, on NATS (docs/sidecar-protocol.md).
//
//   import { Cell, serve } from "@cbs/cell";
//   const greet = new Cell({ id: "greet", service: "greeter", category: "logic",
//                            version: "1.0.0", purpose: "Greets a person by name" });
//   greet.verb("say_hello", { schema: "demo/v1/Name", replySchema: "demo/v1/Greeting" },
//              async (payload) => ({ message: `Hello ${payload.name}!` }));
//   await serve([greet], { servers: process.env.NATS_URL });
import { writeSync } from "node:fs";

import { Svcm } from "@nats-io/services";
import { connect, headers as natsHeaders } from "@nats-io/transport-node";

import {
  CbsError,
  ERROR_CODES,
  ERROR_SCHEMA,
  NAME_RE,
  SCHEMA_RE,
  badRequest,
  decodeRequest,
  encode,
  salvageId,
} from "./envelope.js";

export { CbsError, ERROR_CODES, ERROR_SCHEMA, decodeRequest, encode } from "./envelope.js";

export const CATEGORIES = ["ui", "io", "logic", "integration", "storage"];
const SEMVER_RE = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$/;

/** A cell: its manifest and one handler per verb. */
export class Cell {
  constructor({
    id,
    service = id,
    category,
    version,
    purpose,
    name,
    language = "javascript",
    maxConcurrency = 100,
    errorSchema = ERROR_SCHEMA,
  }) {
    if (!NAME_RE.test(id ?? "")) throw new TypeError(`cell id ${id} is not snake_case`);
    if (!NAME_RE.test(service)) throw new TypeError(`cell ${id}: service is not snake_case`);
    if (!CATEGORIES.includes(category)) throw new TypeError(`cell ${id}: bad category`);
    if (!SEMVER_RE.test(version ?? "")) throw new TypeError(`cell ${id}: bad version`);
    Object.assign(this, { id, service, category, version, purpose, language, errorSchema });
    this.name = name ?? id.replaceAll("_", " ").replace(/^./, (c) => c.toUpperCase());
    this.maxConcurrency = maxConcurrency;
    this.verbs = new Map();
  }

  /** Serve `handler(payload, request)` on cbs.{service}.{verb}. */
  verb(verb, { schema, replySchema, alsoAccepts = [] }, handler) {
    if (!NAME_RE.test(verb)) throw new TypeError(`cell ${this.id}: verb ${verb} is not snake_case`);
    for (const s of [schema, ...alsoAccepts, ...(replySchema ? [replySchema] : [])]) {
      if (!SCHEMA_RE.test(s ?? "")) throw new TypeError(`cell ${this.id}: bad schema ${s}`);
    }
    if (this.verbs.has(verb)) throw new TypeError(`cell ${this.id}: verb ${verb} twice`);
    this.verbs.set(verb, { schema, replySchema, accepts: new Set([schema, ...alsoAccepts]), handler });
    return this;
  }

  manifest() {
    return {
      id: this.id,
      name: this.name,
      version: this.version,
      language: this.language,
      category: this.category,
      purpose: this.purpose,
      interface: {
        serves: [...this.verbs].map(([verb, v]) => ({
          subject: `cbs.${this.service}.${verb}`,
          queue_group: this.service,
          schema: v.schema,
          ...(v.replySchema ? { reply_schema: v.replySchema } : {}),
        })),
      },
    };
  }
}

/** The request being handled, as the handler's second argument. */
class Request {
  constructor(envelope, headers) {
    this.envelope = envelope;
    this.headers = headers;
  }

  /** Seconds left before the caller's `cbs-deadline` header (Infinity without one). */
  get timeLeft() {
    const raw = this.headers?.get("cbs-deadline");
    const deadline = raw ? Number(raw) : NaN;
    return Number.isFinite(deadline) ? deadline - Date.now() / 1000 : Infinity;
  }
}

function replyEnvelope(request, cell, spec, result) {
  return {
    id: request.id,
    service: request.service,
    verb: request.verb,
    schema: spec.replySchema ?? request.schema,
    payload: result,
  };
}

function errorEnvelope(ids, cell, error) {
  return { ...ids, schema: cell.errorSchema, error: error.toWire() };
}

/** Handle one request's bytes: the reply envelope (never throws). */
export async function handle(cell, verb, data, headers, log = console) {
  const spec = cell.verbs.get(verb);
  let request;
  try {
    request = decodeRequest(data);
    if (request.service !== cell.service || request.verb !== verb) {
      throw badRequest("Envelope service and verb do not match the subject");
    }
  } catch (err) {
    const ids = { id: salvageId(data), service: cell.service, verb };
    return [errorEnvelope(ids, cell, err), err];
  }
  const ids = { id: request.id, service: request.service, verb: request.verb };
  try {
    if (!spec.accepts.has(request.schema)) {
      throw badRequest(`Unsupported schema '${request.schema}'`, {
        field: "schema",
        accepts: [...spec.accepts].sort(),
      });
    }
    const result = await spec.handler(request.payload, new Request(request, headers));
    if (result === null || typeof result !== "object" || Array.isArray(result)) {
      log.error(`cell ${cell.id} verb ${verb} returned ${typeof result}, not an object`);
      throw new CbsError("Internal", "Internal error");
    }
    return [replyEnvelope(request, cell, spec, result), null];
  } catch (err) {
    if (err instanceof CbsError) return [errorEnvelope(ids, cell, err), err];
    log.error(`cell ${cell.id} failed on cbs.${cell.service}.${verb} (envelope id ${request.id})`, err);
    const internal = new CbsError("Internal", "Internal error");
    return [errorEnvelope(ids, cell, internal), internal];
  }
}

/** A bounded number of handlers at once; the rest wait their turn. */
class Gate {
  constructor(limit) {
    this.limit = limit;
    this.running = 0;
    this.waiting = [];
    this.idle = Promise.resolve();
    this._resolveIdle = null;
  }

  async run(fn) {
    if (this.running >= this.limit) await new Promise((r) => this.waiting.push(r));
    if (this.running++ === 0) this.idle = new Promise((r) => (this._resolveIdle = r));
    try {
      return await fn();
    } finally {
      this.running--;
      const next = this.waiting.shift();
      if (next) next();
      else if (this.running === 0) this._resolveIdle();
    }
  }

  get inFlight() {
    return this.running + this.waiting.length;
  }
}

/** Heartbeats on the pipe a CBS pool gave (CBS_POOL_HEARTBEAT_FD). */
class Heartbeat {
  constructor(fd, every, gates, onGone) {
    Object.assign(this, { fd, every, gates, onGone, state: "serving" });
  }

  beat() {
    const busy = this.gates.reduce((n, g) => n + g.running, 0);
    const queue = this.gates.reduce((n, g) => n + g.waiting.length, 0);
    try {
      writeSync(this.fd, `${JSON.stringify({ state: this.state, busy, queue })}\n`);
    } catch {
      this.stop();
      this.onGone();
    }
  }

  start() {
    this.beat();
    this.timer = setInterval(() => this.beat(), this.every * 1000);
  }

  stop() {
    clearInterval(this.timer);
  }
}

/**
 * Connect to NATS and serve the cells: each cell is an ADR-32 service (name =
 * cell id) whose endpoints are its verbs on cbs.{service}.{verb}, queue group
 * {service}. Returns a runtime with `stop()` (graceful drain) and `closed`.
 */
export async function serve(cells, options = {}) {
  const servers = options.servers ?? process.env.NATS_URL ?? "nats://127.0.0.1:4222";
  const log = options.log ?? console;
  const nc = options.connection ?? (await connect({ servers, name: options.name ?? `cbs-js-${process.pid}` }));
  const svcm = new Svcm(nc);
  const services = [];
  const gates = [];
  for (const cell of cells) {
    const service = await svcm.add({
      name: cell.id,
      version: cell.version,
      description: cell.purpose ?? "",
      queue: cell.service,
      metadata: {
        "cbs.category": cell.category,
        "cbs.service": cell.service,
        "cbs.language": cell.language,
      },
    });
    const gate = new Gate(cell.maxConcurrency);
    gates.push(gate);
    for (const [verb, spec] of cell.verbs) {
      service.addEndpoint(verb, {
        subject: `cbs.${cell.service}.${verb}`,
        queue: cell.service,
        metadata: {
          "cbs.schema": spec.schema,
          ...(spec.replySchema ? { "cbs.reply_schema": spec.replySchema } : {}),
        },
        handler: (err, msg) => {
          if (err || !msg.reply) return;
          gate.run(async () => {
            const [reply, error] = await handle(cell, verb, msg.data, msg.headers, log);
            if (error) {
              const h = natsHeaders();
              msg.respondError(ERROR_CODES[error.code], error.code, encode(reply), { headers: h });
            } else {
              msg.respond(encode(reply));
            }
          });
        },
      });
    }
    services.push(service);
  }
  await nc.flush();
  let stopping = null;
  const runtime = {
    connection: nc,
    services,
    /** Stop taking requests, let those in flight finish, then close the connection. */
    stop() {
      stopping ??= (async () => {
        if (heartbeat) {
          heartbeat.state = "draining";
          heartbeat.beat();
          heartbeat.stop();
        }
        await Promise.all(services.map((s) => s.stop()));
        await Promise.all(gates.map((g) => g.idle));
        if (!options.connection) await nc.drain();
      })();
      return stopping;
    },
    get inFlight() {
      return gates.reduce((n, g) => n + g.inFlight, 0);
    },
  };
  const fd = Number.parseInt(process.env.CBS_POOL_HEARTBEAT_FD ?? "", 10);
  let heartbeat = null;
  if (Number.isInteger(fd) && options.heartbeat !== false) {
    const every = Number(process.env.CBS_POOL_HEARTBEAT) || 1;
    heartbeat = new Heartbeat(fd, every, gates, () => runtime.stop());
    heartbeat.start();
  }
  runtime.closed = nc.closed();
  return runtime;
}

/** serve(), then a graceful stop on SIGTERM or SIGINT; for a sidecar's main. */
export async function main(cells, options = {}) {
  const runtime = await serve(cells, options);
  const ids = cells.map((c) => c.id).join(", ");
  console.error(`cbs-js: serving cells ${ids} on ${runtime.connection.getServer()}`);
  const stop = () => {
    console.error("cbs-js: signal received: draining");
    runtime.stop().then(() => process.exit(0), () => process.exit(1));
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  return runtime;
}
