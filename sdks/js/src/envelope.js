// The CBS envelope: decoding a request, building replies (docs/sidecar-protocol.md).
import { randomUUID } from "node:crypto";

export const MAX_ENVELOPE_BYTES = 1024 * 1024;
export const MAX_DEPTH = 64;
export const ERROR_SCHEMA = "cbs/v1/Error";
export const NAME_RE = /^[a-z][a-z0-9_]*$/;
export const SCHEMA_RE = /^[a-z][a-z0-9_]+\/v[0-9]+\/[A-Za-z][A-Za-z0-9_]*$/;
export const UUID4_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const FIELDS = new Set(["id", "service", "verb", "schema", "payload", "error"]);

/** The wire error codes, with the number @nats-io/services puts in Nats-Service-Error-Code. */
export const ERROR_CODES = {
  BadRequest: 400,
  NotFound: 404,
  Internal: 500,
  Unavailable: 503,
  Timeout: 504,
};

/** A CBS error: `code` is one of ERROR_CODES; `message` is short and safe to show. */
export class CbsError extends Error {
  constructor(code, message, details) {
    super(message);
    if (!(code in ERROR_CODES)) throw new TypeError(`unknown CBS error code ${code}`);
    this.code = code;
    this.details = details;
  }

  toWire() {
    const error = { code: this.code, message: this.message };
    if (this.details !== undefined) error.details = this.details;
    return error;
  }
}

export const badRequest = (message, details) => new CbsError("BadRequest", message, details);

function depth(value, level = 1) {
  if (level > MAX_DEPTH) return level;
  if (value === null || typeof value !== "object") return level - 1;
  let deepest = level;
  for (const v of Object.values(value)) deepest = Math.max(deepest, depth(v, level + 1));
  return deepest;
}

function hasDuplicateKeys(text) {
  // JSON.parse keeps the last of duplicate keys; CBS rejects them. A reviver
  // cannot see duplicates, so scan object keys with a tiny tokenizer.
  const stack = [];
  const re = /"(?:[^"\\]|\\.)*"|[{}[\],:]/g;
  let prev = null;
  let m;
  while ((m = re.exec(text)) !== null) {
    const t = m[0];
    if (t === "{") stack.push(new Set());
    else if (t === "[") stack.push(null);
    else if (t === "}" || t === "]") stack.pop();
    else if (t[0] === '"') {
      const next = text.slice(re.lastIndex).match(/^\s*:/);
      const top = stack[stack.length - 1];
      if (next && top && (prev === "{" || prev === ",")) {
        const key = JSON.parse(t);
        if (top.has(key)) return true;
        top.add(key);
      }
    }
    prev = t;
  }
  return false;
}

/** Decode request bytes into an envelope, or throw a BadRequest CbsError. */
export function decodeRequest(data) {
  if (data.length > MAX_ENVELOPE_BYTES) throw badRequest("Envelope too large");
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(data);
  } catch {
    throw badRequest("Envelope is not UTF-8");
  }
  let obj;
  try {
    obj = JSON.parse(text);
  } catch {
    throw badRequest("Malformed JSON");
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    throw badRequest("Envelope must be a JSON object");
  }
  if (depth(obj) > MAX_DEPTH) throw badRequest("Envelope nested too deeply");
  if (hasDuplicateKeys(text)) throw badRequest("Duplicate key in envelope");
  for (const key of Object.keys(obj)) {
    if (!FIELDS.has(key)) throw badRequest(`Unknown envelope field '${key}'`, { field: key });
  }
  const check = (field, re) => {
    if (typeof obj[field] !== "string" || !re.test(obj[field])) {
      throw badRequest(`Invalid envelope field '${field}'`, { field });
    }
  };
  check("id", UUID4_RE);
  check("service", NAME_RE);
  check("verb", NAME_RE);
  check("schema", SCHEMA_RE);
  if ("error" in obj) throw badRequest("A request must carry a payload");
  const p = obj.payload;
  if (p === null || typeof p !== "object" || Array.isArray(p)) {
    throw badRequest("A request must carry a payload", { field: "payload" });
  }
  return obj;
}

/** The id of undecodable bytes, when they hold a usable one (else a new one). */
export function salvageId(data) {
  try {
    const obj = JSON.parse(new TextDecoder().decode(data));
    if (obj && typeof obj.id === "string" && UUID4_RE.test(obj.id)) return obj.id;
  } catch {
    // not JSON: a new id
  }
  return randomUUID();
}

/** JSON with keys sorted at every level (CBS encodes deterministically). */
export function encode(value) {
  const sort = (v) => {
    if (Array.isArray(v)) return v.map(sort);
    if (v !== null && typeof v === "object") {
      return Object.fromEntries(
        Object.keys(v)
          .sort()
          .map((k) => [k, sort(v[k])]),
      );
    }
    if (typeof v === "number" && !Number.isFinite(v)) throw new CbsError("Internal", "Internal error");
    return v;
  };
  return new TextEncoder().encode(JSON.stringify(sort(value)));
}
