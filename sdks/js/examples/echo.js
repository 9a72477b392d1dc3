// The benchmark echo cell in JavaScript: cbs.bench_js.echo, answering as the
// Python benchmark cell (benchmarks/stacks.py) does.
import { Cell, main } from "../src/index.js";

export const echo = new Cell({
  id: "bench_echo_js",
  service: "bench_js",
  category: "logic",
  version: "1.0.0",
  purpose: "Benchmark echo",
  maxConcurrency: 256,
});

echo.verb("echo", { schema: "bench/v1/Echo" }, async (payload) => ({ echo: payload.name, n: payload.id + 1 }));

if (import.meta.url === `file://${process.argv[1]}`) await main([echo]);
