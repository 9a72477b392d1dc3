// An echo cell for benchmarks: cbs.echo_js.echo answers its payload.
import { Cell, main } from "../src/index.js";

export const echo = new Cell({
  id: "echo_js",
  category: "logic",
  version: "1.0.0",
  purpose: "Answers the payload it is given",
});

echo.verb("echo", { schema: "bench/v1/Echo" }, async (payload) => payload);

if (import.meta.url === `file://${process.argv[1]}`) await main([echo]);
