// A real nats-server on a free 127.0.0.1 port, stopped by pid.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { randomUUID } from "node:crypto";

import { connect } from "@nats-io/transport-node";

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export async function startNatsServer() {
  const port = await freePort();
  const binary = process.env.NATS_SERVER_BIN ?? "nats-server";
  const child = spawn(binary, ["-a", "127.0.0.1", "-p", String(port)], { stdio: "ignore" });
  const url = `nats://127.0.0.1:${port}`;
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      const nc = await connect({ servers: url, reconnect: false });
      await nc.close();
      break;
    } catch (err) {
      if (Date.now() > deadline || child.exitCode !== null) {
        child.kill("SIGKILL");
        throw new Error(`nats-server did not start (${binary}): ${err.message}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    url,
    stop() {
      if (child.exitCode === null) process.kill(child.pid, "SIGTERM");
    },
  };
}

export function request(service, verb, payload, schema) {
  return { id: randomUUID(), service, verb, schema, payload };
}

export const bytes = (obj) => new TextEncoder().encode(typeof obj === "string" ? obj : JSON.stringify(obj));
export const parse = (msg) => JSON.parse(new TextDecoder().decode(msg.data));
