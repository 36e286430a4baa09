// node --test bridge/client/   (node >= 20, built-in runner; nothing to install)
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { DEFAULT_CONTROL_METHOD, DEFAULT_TOPIC, VoiceAgentEvents } from "./voice-agent-events.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The subset of a livekit-client Room the helper uses. */
class FakeRoom {
  constructor({ agentKinds = {} } = {}) {
    this.handlers = new Map();
    this.rpcCalls = [];
    this.rpcReply = (call) => JSON.stringify({ v: 1, type: "ack", id: JSON.parse(call.payload).id, ts: 1, data: {} });
    this.remoteParticipants = new Map(Object.entries(agentKinds).map(([id, isAgent]) => [id, { identity: id, isAgent }]));
    this.localParticipant = {
      identity: "user-1",
      performRpc: async (call) => {
        this.rpcCalls.push(call);
        return this.rpcReply(call);
      },
    };
  }

  registerTextStreamHandler(topic, handler) {
    if (this.handlers.has(topic)) throw new Error(`handler for ${topic} already set`);
    this.handlers.set(topic, handler);
  }

  unregisterTextStreamHandler(topic) {
    this.handlers.delete(topic);
  }

  /** Deliver one text stream; `delayMs` lets streams finish out of order like concurrent readers. */
  stream(text, { from = "agent", topic = DEFAULT_TOPIC, delayMs = 0 } = {}) {
    const handler = this.handlers.get(topic);
    if (!handler) return;
    handler({ info: { topic }, readAll: () => sleep(delayMs).then(() => text) }, { identity: from });
  }
}

let seqCounter = 0;
function env(seq, type = "agent.text", data = { delta: `d${seq}` }, turn = "t1") {
  seqCounter = seq;
  return JSON.stringify({ v: 1, seq, ts: 1000 + seq, type, turn, data });
}

function collect(events) {
  const seen = [];
  events.on("*", (e) => seen.push(e.seq));
  const problems = [];
  for (const t of ["gap", "duplicate", "protocol-error", "reset"]) events.on(t, (info) => problems.push([t, info]));
  return { seen, problems };
}

test("delivers in order with typed callbacks and remembers hello and pending requests", () => {
  const room = new FakeRoom();
  const events = new VoiceAgentEvents(room).start();
  const texts = [];
  const requests = [];
  events.onAgentText((data, envelope) => texts.push([envelope.turn, data.delta]));
  events.onHitlRequest((data) => requests.push(data.request_id));
  events.receive(env(1, "session.hello", { protocol: 1, agent: "a", capabilities: ["hitl"],
    control: { method: "voice-agent.control", max_message_bytes: 8192 } }), "agent");
  events.receive(env(2), "agent");
  events.receive(env(3, "hitl.request", { request_id: "r1", tool: "book_table" }), "agent");
  assert.deepEqual(texts, [["t1", "d2"]]);
  assert.deepEqual(requests, ["r1"]);
  assert.equal(events.hello.agent, "a");
  assert.deepEqual([...events.pendingRequests.keys()], ["r1"]);
  events.receive(env(4, "hitl.resolved", { request_id: "r1", outcome: "approved" }), "agent");
  assert.equal(events.pendingRequests.size, 0);
  assert.equal(events.agentIdentity, "agent");
});

test("reorders streams that complete out of order, without reporting gaps", async () => {
  const room = new FakeRoom();
  const events = new VoiceAgentEvents(room).start();
  const { seen, problems } = collect(events);
  for (let seq = 1; seq <= 30; seq++) room.stream(env(seq), { delayMs: (31 - seq) % 7 });
  await sleep(30);
  assert.deepEqual(seen, Array.from({ length: 30 }, (_, i) => i + 1));
  assert.deepEqual(problems, []);
});

test("reports a gap after the timeout and drops late duplicates", async () => {
  const room = new FakeRoom();
  const events = new VoiceAgentEvents(room, { gapTimeoutMs: 15 }).start();
  const { seen, problems } = collect(events);
  for (const seq of [1, 2, 4, 5]) events.receive(env(seq), "agent");
  assert.deepEqual(seen, [1, 2]);
  await sleep(40);
  assert.deepEqual(seen, [1, 2, 4, 5]);
  assert.deepEqual(problems, [["gap", { expected: 3, next: 4, missing: 1 }]]);
  events.receive(env(3), "agent");
  events.receive(env(5), "agent");
  assert.deepEqual(problems.slice(1), [["duplicate", { seq: 3 }], ["duplicate", { seq: 5 }]]);
});

test("a full reorder buffer skips the gap at once", () => {
  const events = new VoiceAgentEvents(new FakeRoom(), { maxBuffered: 3, gapTimeoutMs: 60000 });
  const { seen, problems } = collect(events);
  events.receive(env(1), "agent");
  for (const seq of [3, 4, 5, 6]) events.receive(env(seq), "agent");
  assert.deepEqual(seen, [1, 3, 4, 5, 6]);
  assert.equal(problems[0][0], "gap");
  events.stop();
});

test("rejects wrong versions, bad JSON and foreign senders", () => {
  const room = new FakeRoom({ agentKinds: { "agent": true, "mallory": false } });
  const events = new VoiceAgentEvents(room);
  const { seen, problems } = collect(events);
  events.receive("{oops", "agent");
  events.receive("[1,2]", "agent");
  events.receive(JSON.stringify({ v: 2, seq: 1, ts: 0, type: "agent.text", turn: null, data: {} }), "agent");
  events.receive(JSON.stringify({ v: 1, seq: "1", type: "agent.text" }), "agent");
  events.receive(env(1, "session.hello", {}), "mallory"); // not an agent participant
  events.receive(env(1), "agent");
  events.receive(env(2), "someone-else"); // not the agent we follow, and no hello
  assert.deepEqual(seen, [1]);
  assert.deepEqual(problems.map(([, info]) => info.reason),
    ["invalid-json", "not-an-object", "unsupported-version", "invalid-envelope", "foreign-sender", "foreign-sender"]);
});

test("a client joining mid-session starts at its own hello, or at the lowest seq after the window", async () => {
  const room = new FakeRoom();
  const events = new VoiceAgentEvents(room, { gapTimeoutMs: 15 });
  const { seen, problems } = collect(events);
  events.receive(env(42), "agent");
  events.receive(env(41), "agent");
  assert.deepEqual(seen, []);
  await sleep(40);
  assert.deepEqual(seen, [41, 42]);
  assert.deepEqual(problems, []);

  const other = new VoiceAgentEvents(room);
  const got = collect(other);
  other.receive(env(8), "agent");
  other.receive(env(9, "session.hello", { client: "user-1" }), "agent");
  assert.deepEqual(got.seen, [8, 9]);
  other.stop();
});

test("a fixed agent identity accepts nobody else", () => {
  const events = new VoiceAgentEvents(new FakeRoom(), { agentIdentity: "agent-7" });
  const { seen } = collect(events);
  events.receive(env(1, "session.hello", {}), "agent-8");
  events.receive(env(1), "agent-7");
  assert.deepEqual(seen, [1]);
});

function later(text, ms = 5000) {
  const parsed = JSON.parse(text);
  return JSON.stringify({ ...parsed, ts: parsed.ts + ms });
}

test("a new session (hello numbering again, or a new agent) resets ordering", () => {
  const events = new VoiceAgentEvents(new FakeRoom());
  const { seen, problems } = collect(events);
  for (const seq of [1, 2, 3]) events.receive(env(seq), "agent");
  events.receive(later(env(1, "session.hello", {})), "agent");
  events.receive(later(env(2)), "agent");
  events.receive(env(1, "session.hello", {}), "agent-2");
  assert.deepEqual(seen, [1, 2, 3, 1, 2, 1]);
  assert.deepEqual(problems.map(([t, info]) => `${t}:${info.reason}`), ["reset:session-restarted", "reset:agent-changed"]);
  assert.equal(events.agentIdentity, "agent-2");
});

test("session.ended says why the session ended; a request still open then lost its outcome; a new session clears it", () => {
  const events = new VoiceAgentEvents(new FakeRoom());
  const ended = [];
  const resolved = [];
  events.onSessionEnded((data, envelope) => ended.push([data.reason, envelope.seq]));
  events.onHitlResolved((data) => resolved.push([data.request_id, data.outcome]));
  events.receive(env(1, "session.hello", {}), "agent");
  events.receive(env(2, "hitl.request", { request_id: "r1", call_id: "c1", tool: "book_table" }), "agent");
  events.receive(env(3, "hitl.request", { request_id: "r2", call_id: "c2", tool: "send_email" }), "agent");
  events.receive(env(4, "hitl.resolved", { request_id: "r1", outcome: "cancelled", by: "system:session_closed" }), "agent");
  assert.equal(events.ended, null);
  events.receive(env(5, "session.ended", { reason: "shutdown" }, null), "agent");
  assert.deepEqual(ended, [["shutdown", 5]]);
  assert.deepEqual(events.ended, { reason: "shutdown" });
  // r2's hitl.resolved never came (lost): the session is over, nobody can answer it any more
  assert.deepEqual(resolved, [["r1", "cancelled"], ["r2", null]]);
  assert.equal(events.pendingRequests.size, 0);
  events.receive(later(env(1, "session.hello", {})), "agent"); // the agent is dispatched again
  assert.equal(events.ended, null);
});

test("control messages go to the agent over RPC and resolve with its reply", async () => {
  const room = new FakeRoom();
  const events = new VoiceAgentEvents(room, { responseTimeoutMs: 5000 }).start();
  await assert.rejects(events.interrupt(), /agent identity unknown/);
  room.stream(env(1, "session.hello", {}), { from: "agent-1" });
  await sleep(1);
  const ack = await events.approve("r1", { party_size: 3 });
  assert.equal(ack.type, "ack");
  await events.reject("r2", "not now");
  await events.interrupt();
  await events.sendText("hello there");
  room.rpcReply = (call) => JSON.stringify({ v: 1, type: "error", id: JSON.parse(call.payload).id, ts: 1,
    data: { code: "forbidden", message: "no", fatal: false } });
  const err = await events.respond("r3", "approve");
  assert.equal(err.data.code, "forbidden");
  await assert.rejects(events.respond("r4", "maybe"), TypeError);

  assert.ok(room.rpcCalls.every((c) => c.destinationIdentity === "agent-1" && c.method === DEFAULT_CONTROL_METHOD
    && c.responseTimeout === 5000));
  const sent = room.rpcCalls.map((c) => JSON.parse(c.payload));
  assert.ok(sent.every((m) => m.v === 1 && typeof m.id === "string"));
  assert.deepEqual(sent.map((m) => [m.type, m.data]), [
    ["hitl.respond", { request_id: "r1", decision: "approve", arguments: { party_size: 3 } }],
    ["hitl.respond", { request_id: "r2", decision: "reject", reason: "not now" }],
    ["agent.interrupt", {}],
    ["user.text", { text: "hello there" }],
    ["hitl.respond", { request_id: "r3", decision: "approve" }],
  ]);
  assert.equal(new Set(sent.map((m) => m.id)).size, sent.length);
});

test("start/stop register and remove the topic handler; a broken listener does not stop others", () => {
  const room = new FakeRoom();
  const events = new VoiceAgentEvents(room, { topic: "custom.topic" }).start();
  assert.ok(room.handlers.has("custom.topic"));
  const got = [];
  const originalError = console.error;
  console.error = () => {};
  try {
    events.on("agent.text", () => { throw new Error("listener bug"); });
    events.on("agent.text", (d) => got.push(d.delta));
    events.receive(env(1), "agent");
  } finally {
    console.error = originalError;
  }
  assert.deepEqual(got, ["d1"]);
  events.stop();
  assert.equal(room.handlers.size, 0);
});

test("replays a real session recorded from the Python bridge, shuffled", async () => {
  const lines = readFileSync(new URL("./fixtures/example-session.jsonl", import.meta.url), "utf8")
    .trim().split("\n").map((l) => JSON.parse(l));
  const published = lines.filter((l) => l.dir === "out").map((l) => l.msg);
  const room = new FakeRoom();
  const events = new VoiceAgentEvents(room).start();
  const { seen, problems } = collect(events);
  let reply = "";
  let done = null;
  events.onAgentText((d) => { reply += d.delta; });
  events.onTurnDone((d) => { done = d; });
  published.forEach((msg, i) => room.stream(JSON.stringify(msg), { delayMs: (i * 7) % 5 }));
  await sleep(30);
  assert.deepEqual(problems, []);
  assert.deepEqual(seen, published.map((m) => m.seq));
  assert.equal(done.reason, "completed");
  const deltas = published.filter((m) => m.type === "agent.text").map((m) => m.data.delta).join("");
  assert.equal(reply, deltas);
  assert.equal(reply.replace(/\s+/g, ""), done.text.replace(/\s+/g, ""));
  assert.equal(events.pendingRequests.size, 0);
});

test("a re-sent or late hello is a duplicate: pending approvals and ordering stay", async () => {
  // the agent re-sends an envelope whose send timed out but may have arrived, and a hello the
  // gap timer skipped may still complete: neither is a new session
  const events = new VoiceAgentEvents(new FakeRoom(), { gapTimeoutMs: 15 });
  const { seen, problems } = collect(events);
  const hello = env(1, "session.hello", { client: "user-1" });
  events.receive(hello, "agent");
  events.receive(env(2, "hitl.request", { request_id: "r1", tool: "book_table" }), "agent");
  events.receive(hello, "agent");
  events.receive(env(4), "agent"); // 3 (a hello) is late
  await sleep(40);
  events.receive(env(3, "session.hello", { client: "user-2" }), "agent");
  events.receive(env(5), "agent");
  assert.deepEqual(seen, [1, 2, 4, 5]);
  assert.deepEqual(problems.map(([t, info]) => `${t}:${info.seq ?? info.expected}`), ["duplicate:1", "gap:3", "duplicate:3"]);
  assert.deepEqual([...events.pendingRequests.keys()], ["r1"]);
});

test("a client joining while an approval is open learns it from its hello's pending list", () => {
  const room = new FakeRoom(); // local identity user-1, a supervisor's dashboard joining late
  const events = new VoiceAgentEvents(room).start();
  const { seen, problems } = collect(events);
  const asked = [];
  events.onHitlRequest((data, envelope) => asked.push([data.request_id, envelope.turn, envelope.ts, envelope.seq]));
  const open = { request_id: "r1", call_id: "c1", tool: "book_table", prompt: "Book?", arguments: null,
    deadline: 31000, for: "alice", turn: "turn_3" };
  events.receive(env(40, "session.hello", { client: "user-1", pending: [open] }), "agent");
  // the request was asked before we joined: it is pending now and announced like a hitl.request
  assert.deepEqual(asked, [["r1", "turn_3", 1040, 40]]);
  assert.equal(events.pendingRequests.get("r1").for, "alice");
  assert.equal(events.pendingRequests.get("r1").turn, undefined); // the same data a hitl.request has
  // someone else's later hello lists it again: nothing new to announce
  events.receive(env(41, "session.hello", { client: "user-9", pending: [open] }), "agent");
  assert.equal(asked.length, 1);
  events.receive(env(42, "hitl.resolved", { request_id: "r1", outcome: "approved" }), "agent");
  assert.equal(events.pendingRequests.size, 0);
  assert.deepEqual(seen, [40, 41, 42]);
  assert.deepEqual(problems, []);
  // a hello without the field (an older agent) or with a malformed list changes nothing
  events.receive(env(43, "session.hello", { client: "user-8", pending: "nope" }), "agent");
  events.receive(env(44, "session.hello", { client: "user-7", pending: [null, { tool: "x" }] }), "agent");
  assert.equal(asked.length, 1);
  assert.deepEqual(seen, [40, 41, 42, 43, 44]);
});

test("control messages use the RPC method the agent's hello names (BRIDGE_CONTROL_METHOD), unless fixed", async () => {
  const hello = (seq, method) => env(seq, "session.hello", { client: "user-1",
    control: { method, max_message_bytes: 8192 } });
  const room = new FakeRoom();
  const events = new VoiceAgentEvents(room).start();
  events.receive(hello(1, "acme.control"), "agent");
  await events.interrupt();
  events.receive(hello(2, ""), "agent"); // not a method name: keep the one we have
  await events.sendText("hi");
  assert.deepEqual(room.rpcCalls.map((c) => c.method), ["acme.control", "acme.control"]);

  const fixedRoom = new FakeRoom();
  const fixed = new VoiceAgentEvents(fixedRoom, { controlMethod: "mine.control" }).start();
  fixed.receive(hello(1, "acme.control"), "agent");
  await fixed.interrupt();
  assert.deepEqual(fixedRoom.rpcCalls.map((c) => c.method), ["mine.control"]);
});

/** An ack to a session.sync listing `pending` (what the Python bridge replies). */
function syncAck(call, pending, { ts = 5000, truncated = false } = {}) {
  return JSON.stringify({ v: 1, type: "ack", id: JSON.parse(call.payload).id, ts,
    data: { type: "session.sync", request_id: null, pending, truncated } });
}

const openRequest = (id, turn = "t1") => ({ request_id: id, call_id: `c-${id}`, tool: "book_table", prompt: "Book?",
  arguments: null, deadline: 90000, for: "user-1", turn });

test("after a gap the helper syncs: a lost hitl.request is announced, a lost hitl.resolved closes its request", async () => {
  const room = new FakeRoom();
  const events = new VoiceAgentEvents(room, { gapTimeoutMs: 10 }).start();
  const { seen, problems } = collect(events);
  const asked = [];
  const resolved = [];
  events.onHitlRequest((data, envelope) => asked.push([data.request_id, envelope.seq, envelope.ts, envelope.turn]));
  events.onHitlResolved((data, envelope) => resolved.push([data.request_id, data.outcome, data.tool, envelope.ts]));
  room.rpcReply = (call) => syncAck(call, [openRequest("r2", "t2")]);
  events.receive(env(1, "session.hello", { client: "user-1", control: { method: "acme.control" }, pending: [] }), "agent");
  events.receive(env(2, "hitl.request", { request_id: "r1", call_id: "c-r1", tool: "book_table" }), "agent");
  // lost: 3 = hitl.resolved r1, 4 = hitl.request r2
  events.receive(env(5), "agent");
  await sleep(30);
  assert.deepEqual(problems.map(([t]) => t), ["gap"]);
  assert.deepEqual(room.rpcCalls.map((c) => [c.destinationIdentity, c.method, JSON.parse(c.payload).type, JSON.parse(c.payload).data]),
    [["agent", "acme.control", "session.sync", {}]]);
  assert.deepEqual(asked, [["r1", 2, 1002, "t1"], ["r2", null, 5000, "t2"]]);
  assert.deepEqual(resolved, [["r1", null, "book_table", 5000]]);
  assert.deepEqual([...events.pendingRequests.keys()], ["r2"]);
  assert.equal(events.pendingRequests.get("r2").turn, undefined); // the data a hitl.request has
  assert.deepEqual(seen, [1, 2, 5]);
  // a later hello listing r2 again announces nothing new
  events.receive(env(6, "session.hello", { client: "user-9", pending: [openRequest("r2", "t2")] }), "agent");
  assert.equal(asked.length, 2);
});

test("sync() against envelopes still on the way: nothing announced twice, nothing revived, nothing dropped early", async () => {
  const room = new FakeRoom();
  const events = new VoiceAgentEvents(room).start();
  const { seen } = collect(events);
  const asked = [];
  const resolved = [];
  events.onHitlRequest((data) => asked.push(data.request_id));
  events.onHitlResolved((data) => resolved.push([data.request_id, data.outcome]));
  events.receive(env(1, "session.hello", { client: "user-1", pending: [] }), "agent");
  events.receive(env(2, "hitl.request", { request_id: "r1", call_id: "c-r1", tool: "book_table" }), "agent");
  let answer;
  room.rpcReply = () => new Promise((resolve) => { answer = resolve; });
  const syncing = events.sync();
  await sleep(1);
  const [call] = room.rpcCalls;
  // while the ack travels: r1 is decided, r3 asked (r3 after the agent built its ack)
  events.receive(env(3, "hitl.resolved", { request_id: "r1", outcome: "approved" }), "agent");
  events.receive(env(4, "hitl.request", { request_id: "r3", call_id: "c-r3", tool: "book_table" }), "agent");
  // the ack lists r1 (still open when it was built) and r2, whose hitl.request is still on the way
  answer(syncAck(call, [openRequest("r1"), openRequest("r2")]));
  const reply = await syncing;
  assert.equal(reply.type, "ack");
  assert.deepEqual(asked, ["r1", "r3", "r2"]);
  assert.deepEqual(resolved, [["r1", "approved"]]); // r1 not revived; r3 (not known at the call) kept
  assert.deepEqual([...events.pendingRequests.keys()].sort(), ["r2", "r3"]);
  events.receive(env(5, "hitl.request", { request_id: "r2", call_id: "c-r2", tool: "book_table" }), "agent");
  assert.deepEqual(asked, ["r1", "r3", "r2"]); // r2's own envelope: delivered, not announced again
  assert.deepEqual(seen, [1, 2, 3, 4, 5]);
  assert.equal(events.pendingRequests.get("r2").prompt, undefined); // the envelope's data now
});

test("sync: a truncated list drops nothing, an older agent's error or a reset changes nothing, syncOnGap: false", async () => {
  const room = new FakeRoom();
  const events = new VoiceAgentEvents(room).start();
  const resolved = [];
  events.onHitlResolved((data) => resolved.push(data.request_id));
  events.receive(env(1, "session.hello", { client: "user-1" }), "agent");
  events.receive(env(2, "hitl.request", { request_id: "r1", tool: "book_table" }), "agent");
  room.rpcReply = (call) => syncAck(call, [], { truncated: true });
  await events.sync();
  room.rpcReply = (call) => JSON.stringify({ v: 1, type: "error", id: JSON.parse(call.payload).id, ts: 1,
    data: { code: "unknown_type", message: "unknown message type 'session.sync'", fatal: false } });
  assert.equal((await events.sync()).data.code, "unknown_type");
  assert.deepEqual([...events.pendingRequests.keys()], ["r1"]);
  let answer;
  room.rpcReply = () => new Promise((resolve) => { answer = resolve; });
  const syncing = events.sync();
  await sleep(1);
  events.receive(env(1, "session.hello", { client: "user-1" }), "agent-2"); // another agent: reset
  events.receive(env(2, "hitl.request", { request_id: "r9", tool: "book_table" }), "agent-2");
  answer(syncAck(room.rpcCalls.at(-1), [openRequest("r1")]));
  await syncing;
  assert.deepEqual([...events.pendingRequests.keys()], ["r9"]);
  assert.deepEqual(resolved, []);

  const quiet = new VoiceAgentEvents(room, { gapTimeoutMs: 5, syncOnGap: false });
  const calls = room.rpcCalls.length;
  quiet.receive(env(1), "agent");
  quiet.receive(env(3), "agent");
  await sleep(20);
  assert.equal(room.rpcCalls.length, calls);
});

test("gaps while a sync is in flight ask once more afterwards; a failed sync is reported", async () => {
  const room = new FakeRoom();
  const events = new VoiceAgentEvents(room, { maxBuffered: 1, gapTimeoutMs: 60000 });
  const { problems } = collect(events);
  const answers = [];
  room.rpcReply = () => new Promise((resolve, reject) => { answers.push({ resolve, reject }); });
  events.receive(env(1, "session.hello", { client: "user-1" }), "agent");
  for (const seq of [3, 4, 6, 7, 9, 10]) events.receive(env(seq), "agent"); // gaps at 2, 5 and 8
  await sleep(1);
  assert.equal(room.rpcCalls.length, 1);
  answers[0].reject(new Error("Response timeout"));
  await sleep(1);
  assert.equal(room.rpcCalls.length, 2);
  answers[1].resolve(syncAck(room.rpcCalls[1], []));
  await sleep(1);
  assert.equal(room.rpcCalls.length, 2);
  assert.deepEqual(problems.map(([t, info]) => `${t}:${info.reason ?? info.expected}`),
    ["gap:2", "gap:5", "gap:8", "protocol-error:sync-failed"]);
});
