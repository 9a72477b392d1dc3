// The greet cell of the CBS demo, in JavaScript: cbs.greeter.say_hello,
// answering exactly as the Python cell of cbs-greeter does.
//   NATS_URL=nats://127.0.0.1:4222 node examples/greet.js
import { CbsError, Cell, main } from "../src/index.js";

function requiredText(payload, field) {
  if (!(field in payload)) {
    throw new CbsError("BadRequest", `Missing required field '${field}'`, {
      field,
      constraint: "required",
    });
  }
  const value = payload[field];
  if (typeof value !== "string") {
    throw new CbsError("BadRequest", `Field '${field}' must be a string`, { field, constraint: "type" });
  }
  if (value.trim() === "") {
    throw new CbsError("BadRequest", `Field '${field}' must not be empty`, {
      field,
      constraint: "minLength",
    });
  }
  return value;
}

export const greet = new Cell({
  id: "greet",
  service: "greeter",
  category: "logic",
  version: "1.0.0",
  name: "Greet",
  purpose: "Greets a person by name",
  errorSchema: "demo/v1/Error",
});

greet.verb("say_hello", { schema: "demo/v1/Name", replySchema: "demo/v1/Greeting" }, async (payload) => ({
  message: `Hello ${requiredText(payload, "name")}!`,
}));

if (import.meta.url === `file://${process.argv[1]}`) await main([greet]);
