// The client against a real gateway and producer, started by the Rust test
// `js_client::the_js_client_tests_pass_against_a_real_gateway` (scripts/test), which
// passes their URLs in STREAMGATE_GATEWAY and STREAMGATE_PRODUCER.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createHmac } from "node:crypto";
import { EventSource } from "eventsource";
import { subscribe, memoryStorage } from "../src/streamgate.js";

const gateway = process.env.STREAMGATE_GATEWAY;
const producer = process.env.STREAMGATE_PRODUCER;
if (!gateway || !producer) {
  throw new Error("STREAMGATE_GATEWAY and STREAMGATE_PRODUCER must name a running gateway and producer");
}
const secret = process.env.STREAMGATE_JWT_SECRET;
const run = `${process.pid}-${Date.now()}`;

/** An HS256 token for `topics`, valid `seconds` from now. */
function token(topics, seconds) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub: "js-test", topics, exp: Math.floor(Date.now() / 1000) + seconds })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}
const topicName = (name) => `js-${run}-${name}`;

async function publish(topic, data, name) {
  const response = await fetch(`${producer}/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(name ? { topic, data, event: name } : { topic, data }),
  });
  assert.equal(response.status, 200, await response.text());
}

function waitFor(check, what, ms = 10000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () => {
      if (check()) return resolve();
      if (Date.now() - started > ms) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

function collect(options) {
  const events = [];
  const resets = [];
  const states = [];
  const subscription = subscribe({
    EventSource,
    url: `${gateway}/events`,
    onEvent: (event) => events.push(event),
    onReset: (notice) => resets.push(notice),
    onState: (state) => states.push(state),
    backoff: { initialMs: 50, maxMs: 200 },
    ...options,
  });
  return { subscription, events, resets, states };
}

test("delivers one topic's events in order and keeps the cursor", async () => {
  const topic = topicName("one");
  const storage = memoryStorage();
  const { subscription, events } = collect({ topics: [topic], storage });
  await waitFor(() => subscription.state === "open", "open");
  for (let n = 0; n < 3; n++) await publish(topic, `e${n}`);
  await waitFor(() => events.length === 3, "three events");
  assert.deepEqual(events.map((e) => e.data), ["e0", "e1", "e2"]);
  assert.equal(events[0].topic, topic);
  assert.equal(subscription.cursor, events[2].id);
  subscription.close();
  assert.equal(subscription.state, "closed");

  // Resumes from the stored cursor: exactly what was missed.
  await publish(topic, "e3");
  await publish(topic, "e4");
  const again = collect({ topics: [topic], storage });
  await waitFor(() => again.events.length === 2, "the two missed events");
  assert.deepEqual(again.events.map((e) => e.data), ["e3", "e4"]);
  again.subscription.close();
});

test("stores the stream's cursor before any event, so a reload misses nothing", async () => {
  const topic = topicName("quiet");
  const storage = memoryStorage();
  const first = collect({ topics: [topic], storage });
  await waitFor(() => first.subscription.cursor !== null, "the first cursor");
  first.subscription.close();
  await publish(topic, "while away");
  const second = collect({ topics: [topic], storage });
  await waitFor(() => second.events.length === 1, "the event published while away");
  assert.equal(second.events[0].data, "while away");
  second.subscription.close();
});

test("several topics on one stream, named event types", async () => {
  const [a, b] = [topicName("a"), topicName("b")];
  const { subscription, events } = collect({ topics: [a, b], eventTypes: ["status"] });
  await waitFor(() => subscription.state === "open", "open");
  await publish(a, "a0");
  await publish(b, "b0", "status");
  await waitFor(() => events.length === 2, "two events");
  assert.deepEqual(events.map((e) => [e.type, e.data]), [["message", "a0"], ["status", "b0"]]);
  subscription.close();
});

test("reports a reset with its topic and reason", async () => {
  const topic = topicName("reset");
  await publish(topic, "before");
  const storage = memoryStorage();
  const key = "cursor";
  storage.setItem(key, "1-0~anotherepoch");
  const { subscription, resets } = collect({ topics: [topic], storage, storageKey: key });
  await waitFor(() => resets.length === 1, "the reset");
  assert.deepEqual(resets[0], { topic, reason: "history_lost" });
  subscription.close();
});

test("opens again with backoff when the server answers non-200 and the EventSource gives up", async () => {
  const topic = topicName("gaveup");
  let refusals = 0;
  const server = http.createServer((request, response) => {
    if (refusals < 2) {
      refusals += 1;
      response.writeHead(503, { "content-type": "application/json" });
      response.end('{"error":"not now"}');
      return;
    }
    response.writeHead(307, { location: `${gateway}${request.url}` });
    response.end();
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  const { subscription, events, states } = collect({ topics: [topic], url: `http://127.0.0.1:${port}/events` });
  await waitFor(() => subscription.state === "open", "open after two refusals");
  assert.equal(refusals, 2);
  assert.ok(states.includes("retrying"), states.join(","));
  await publish(topic, "through");
  await waitFor(() => events.length === 1, "an event after the refusals");
  subscription.close();
  server.close();
});

test("asks for a fresh token when the stream's token expires, and misses nothing", async () => {
  const topic = `private-${run}`;
  let refreshed = 0;
  const { subscription, events } = collect({
    topics: [topic],
    token: token([topic], 2),
    onAuthExpired: () => {
      refreshed += 1;
      return token([topic], 60);
    },
  });
  await waitFor(() => subscription.state === "open", "open");
  await publish(topic, "before expiry");
  await waitFor(() => refreshed === 1, "the token refresh", 15000);
  await publish(topic, "after expiry");
  await waitFor(() => events.length === 2, "both events");
  assert.deepEqual(events.map((e) => e.data), ["before expiry", "after expiry"]);
  subscription.close();
});

test("reports a topic the token does not allow, and stops", async () => {
  const errors = [];
  const { subscription } = collect({
    topics: [`private-other-${run}`],
    token: token([`private-${run}`], 60),
    onError: (error) => errors.push(error),
  });
  await waitFor(() => errors.length === 1, "the refusal");
  assert.equal(errors[0].status, 403);
  assert.equal(subscription.state, "closed");
});
