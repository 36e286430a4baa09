// Browser helper for the voice-agent bridge, protocol v1 (see docs/protocol.md).
// A plain ES module with no build step and no dependencies: pass it a `livekit-client` Room
// and call `start()` before `room.connect()`, so the client gets its own first `session.hello`
// (docs/protocol.md: register before connecting).
//
//   import { VoiceAgentEvents } from "./voice-agent-events.js";
//   const events = new VoiceAgentEvents(room).start();
//   events.on("agent.text", (data, env) => append(env.turn, data.delta));
//   events.on("hitl.request", async (data) => {
//     const reply = await events.approve(data.request_id);   // or events.reject(id, "reason")
//     if (reply.type === "error") console.warn(reply.data.code, reply.data.message);
//   });
//   events.on("gap", ({ expected, next }) => console.warn("lost envelopes", expected, "to", next - 1));
//
// After a gap the helper asks the agent which approvals are open (`session.sync`, also
// `events.sync()`), so a lost `hitl.request` is still announced and a lost `hitl.resolved`
// still closes its request (see `sync`). A session that ends cleanly says why, last
// (`session.ended`: `participant_left`, `inactivity`, `shutdown`, `error`; kept as `events.ended`);
// an agent that leaves without it crashed or lost its connection.
//
// Envelopes arrive on a text-stream topic; each stream is read concurrently, so they may
// complete out of order. The helper reorders them by `seq`, drops duplicates, and when an
// envelope does not arrive within `gapTimeoutMs` (or too many wait behind it) reports a gap
// and moves on. A client that joins mid-session starts at seq 1 or its own `session.hello`
// (or, failing both, at the lowest seq seen within `gapTimeoutMs`). Control messages go to the agent over RPC; the promise resolves with the
// agent's reply ({type: "ack"} or {type: "error", data: {code, message}}), which only the
// sender receives. It rejects when the RPC itself fails (timeout, agent gone), when the agent
// identity is not known yet, on an invalid `decision` argument, or when the reply is not JSON.

export const PROTOCOL_VERSION = 1;
export const DEFAULT_TOPIC = "voice-agent.events";
export const DEFAULT_CONTROL_METHOD = "voice-agent.control";

/** Envelope types (agent -> client). */
export const EVENT_TYPES = Object.freeze([
  "session.hello", "user.transcript", "agent.text", "tool.started", "tool.finished",
  "hitl.request", "hitl.resolved", "turn.done", "metrics", "error", "session.ended",
]);

/** Non-envelope notifications the helper itself emits. */
export const HELPER_EVENTS = Object.freeze(["envelope", "gap", "duplicate", "protocol-error", "reset"]);

/**
 * @typedef {{v: 1, seq: number, ts: number, type: string, turn: string|null, data: any}} Envelope
 * @typedef {{v: 1, type: "ack"|"error", id: string|null, ts: number, data: any}} Reply
 * @typedef {{topic?: string, controlMethod?: string, agentIdentity?: string,
 *            responseTimeoutMs?: number, gapTimeoutMs?: number, maxBuffered?: number,
 *            syncOnGap?: boolean}} Options
 */

let nextMessageId = 1;

export class VoiceAgentEvents {
  /** @param {any} room a livekit-client Room  @param {Options} [options] */
  constructor(room, options = {}) {
    this.room = room;
    this.topic = options.topic ?? DEFAULT_TOPIC;
    this.controlMethod = options.controlMethod ?? DEFAULT_CONTROL_METHOD;
    this._fixedMethod = options.controlMethod != null;
    this.agentIdentity = options.agentIdentity ?? null;
    this._fixedAgent = options.agentIdentity != null;
    this.responseTimeoutMs = options.responseTimeoutMs ?? 10000;
    this.gapTimeoutMs = options.gapTimeoutMs ?? 2000;
    this.maxBuffered = options.maxBuffered ?? 256;
    this.syncOnGap = options.syncOnGap ?? true;
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** @type {Map<number, Envelope>} */
    this._buffer = new Map();
    this._expected = null; // next seq to deliver; null until the first envelope
    this._lastTs = 0; // the newest `ts` delivered: tells a restarted session's hello from a re-sent one
    this._gapTimer = null;
    this._started = false;
    /** Pending approval requests by id (from hitl.request until hitl.resolved). */
    this.pendingRequests = new Map();
    this.hello = null;
    /** The `data` of the session's `session.ended` ({reason}), null while it runs. */
    this.ended = null;
    this._resolvedIds = new Set(); // recently resolved: a sync ack sent before cannot revive them
    this._epoch = 0; // bumped by a reset: a sync ack from before it is about another session
    this._syncing = false;
    this._syncAgain = false;
  }

  /** Subscribe to the events topic. Returns `this`. */
  start() {
    if (this._started) return this;
    this.room.registerTextStreamHandler(this.topic, (reader, participantInfo) => {
      reader.readAll().then(
        (text) => this.receive(text, participantInfo?.identity ?? null),
        (err) => this._emit("protocol-error", { reason: "stream-failed", error: String(err) }),
      );
    });
    this._started = true;
    return this;
  }

  stop() {
    if (!this._started) return;
    this.room.unregisterTextStreamHandler?.(this.topic);
    this._started = false;
    this._clearGapTimer();
  }

  /**
   * Listen to an envelope type (callback gets `(data, envelope)`), "*" / "envelope" for every
   * envelope in order, or a helper event: "gap", "duplicate", "protocol-error", "reset".
   * Returns a function that removes the listener.
   */
  on(type, callback) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(callback);
    return () => this._listeners.get(type)?.delete(callback);
  }

  // typed conveniences
  onHello(cb) { return this.on("session.hello", cb); }
  onTranscript(cb) { return this.on("user.transcript", cb); }
  onAgentText(cb) { return this.on("agent.text", cb); }
  onToolStarted(cb) { return this.on("tool.started", cb); }
  onToolFinished(cb) { return this.on("tool.finished", cb); }
  onHitlRequest(cb) { return this.on("hitl.request", cb); }
  onHitlResolved(cb) { return this.on("hitl.resolved", cb); }
  onTurnDone(cb) { return this.on("turn.done", cb); }
  onMetrics(cb) { return this.on("metrics", cb); }
  onError(cb) { return this.on("error", cb); }
  onSessionEnded(cb) { return this.on("session.ended", cb); }

  /** Feed one raw envelope (the text-stream handler calls this; tests may too). */
  receive(text, senderIdentity = null) {
    let env;
    try {
      env = JSON.parse(text);
    } catch {
      this._emit("protocol-error", { reason: "invalid-json", raw: String(text).slice(0, 200) });
      return;
    }
    if (env === null || typeof env !== "object" || Array.isArray(env)) {
      this._emit("protocol-error", { reason: "not-an-object" });
      return;
    }
    if (env.v !== PROTOCOL_VERSION) {
      this._emit("protocol-error", { reason: "unsupported-version", version: env.v });
      return;
    }
    if (!Number.isInteger(env.seq) || env.seq < 1 || typeof env.type !== "string") {
      this._emit("protocol-error", { reason: "invalid-envelope" });
      return;
    }
    if (senderIdentity !== null && !this._acceptSender(senderIdentity, env)) {
      this._emit("protocol-error", { reason: "foreign-sender", identity: senderIdentity });
      return;
    }
    if (env.type === "session.hello" && this._expected !== null && env.seq < this._expected
        && env.ts > this._lastTs) {
      // the same agent identity started numbering again; a hello that is not newer than what we
      // delivered is a re-sent copy or a straggler the gap timer skipped: a duplicate below
      this._reset("session-restarted");
    }
    if ((this._expected !== null && env.seq < this._expected) || this._buffer.has(env.seq)) {
      this._emit("duplicate", { seq: env.seq });
      return;
    }
    this._buffer.set(env.seq, env);
    if (this._expected === null) {
      // Where does the stream start for us? Certain at seq 1 or at our own hello; otherwise
      // wait up to gapTimeoutMs for earlier envelopes still being read, then start at the lowest.
      const mine = env.type === "session.hello" && env.data?.client === this.room.localParticipant?.identity;
      if (env.seq !== 1 && !mine) {
        this._armGapTimer();
        return;
      }
      this._expected = Math.min(...this._buffer.keys());
    }
    this._drain();
    if (this._buffer.size > this.maxBuffered) this._skipGap();
    else if (this._buffer.size > 0) this._armGapTimer();
  }

  // -- control messages -----------------------------------------------------------------------

  /** @returns {Promise<Reply>} */
  respond(requestId, decision, { arguments: args, reason } = {}) {
    if (decision !== "approve" && decision !== "reject") {
      return Promise.reject(new TypeError('decision must be "approve" or "reject"'));
    }
    const data = { request_id: requestId, decision };
    if (args !== undefined) data.arguments = args;
    if (reason !== undefined) data.reason = reason;
    return this.send("hitl.respond", data);
  }

  approve(requestId, modifiedArguments) {
    return this.respond(requestId, "approve", modifiedArguments ? { arguments: modifiedArguments } : {});
  }

  reject(requestId, reason) {
    return this.respond(requestId, "reject", reason !== undefined ? { reason } : {});
  }

  interrupt() { return this.send("agent.interrupt", {}); }

  /**
   * Ask the agent which approval requests are open now (`session.sync`) and merge its answer
   * into `pendingRequests`: a request not known yet is added and announced to "hitl.request"
   * listeners (envelope `{v, seq: null, ts, type: "hitl.request", turn, data}`, `ts` the ack's);
   * a request known before the call that the agent no longer lists is removed and announced to
   * "hitl.resolved" listeners with `outcome: null` (its hitl.resolved was lost; if it still
   * arrives it is delivered as usual). Called automatically after a gap (`options.syncOnGap`).
   * @returns {Promise<Reply>} the agent's reply (an older agent answers `unknown_type`)
   */
  async sync() {
    const epoch = this._epoch;
    const known = new Set(this.pendingRequests.keys());
    const reply = await this.send("session.sync", {});
    if (reply?.type === "ack" && epoch === this._epoch && Array.isArray(reply.data?.pending)) {
      const base = { v: PROTOCOL_VERSION, seq: null, ts: reply.ts };
      const listed = this._learnPending(reply.data.pending, base);
      // a truncated list says nothing about the requests it left out
      if (reply.data.truncated !== true) {
        for (const id of known) {
          if (!listed.has(id)) this._outcomeLost(id, base);
        }
      }
    }
    return reply;
  }

  sendText(text) { return this.send("user.text", { text }); }

  /** Send any client message type; resolves with the agent's reply. Goes to the RPC method the
   *  agent's hello named (`control.method`), or `options.controlMethod` when given. */
  async send(type, data) {
    const destination = this.agentIdentity;
    if (!destination) {
      throw new Error("agent identity unknown: no envelope received yet (or pass options.agentIdentity)");
    }
    const id = `m${nextMessageId++}`;
    const payload = JSON.stringify({ v: PROTOCOL_VERSION, id, type, data });
    const response = await this.room.localParticipant.performRpc({
      destinationIdentity: destination,
      method: this.controlMethod,
      payload,
      responseTimeout: this.responseTimeoutMs,
    });
    return JSON.parse(response);
  }

  // -- ordering -------------------------------------------------------------------------------

  /** Only the agent may publish envelopes: a fixed identity if configured, else the first
   *  (agent-kind, when the room can tell) sender; a new agent takes over with a session.hello. */
  _acceptSender(identity, env) {
    if (this._fixedAgent) return identity === this.agentIdentity;
    const participant = this.room.remoteParticipants?.get?.(identity);
    if (participant && participant.isAgent === false) return false;
    if (this.agentIdentity === null) {
      this.agentIdentity = identity;
      return true;
    }
    if (identity === this.agentIdentity) return true;
    if (env.type !== "session.hello") return false;
    this._reset("agent-changed");
    this.agentIdentity = identity;
    return true;
  }

  _drain() {
    while (this._buffer.has(this._expected)) {
      const env = this._buffer.get(this._expected);
      this._buffer.delete(this._expected);
      this._expected += 1;
      this._deliver(env);
    }
    if (this._buffer.size === 0) this._clearGapTimer();
  }

  _skipGap() {
    if (this._buffer.size === 0) return;
    const next = Math.min(...this._buffer.keys());
    if (this._expected !== null) {
      this._emit("gap", { expected: this._expected, next, missing: next - this._expected });
      this._syncAfterGap();
    }
    this._expected = next;
    this._drain();
    if (this._buffer.size > 0) this._armGapTimer(true);
  }

  /** One sync at a time; a gap while one is in flight asks again once it is answered. */
  _syncAfterGap() {
    if (!this.syncOnGap || !this.agentIdentity) return;
    if (this._syncing) {
      this._syncAgain = true;
      return;
    }
    this._syncing = true;
    this.sync()
      .catch((err) => this._emit("protocol-error", { reason: "sync-failed", error: String(err) }))
      .finally(() => {
        this._syncing = false;
        if (this._syncAgain) {
          this._syncAgain = false;
          this._syncAfterGap();
        }
      });
  }

  _armGapTimer(restart = false) {
    if (this._gapTimer !== null && !restart) return;
    this._clearGapTimer();
    this._gapTimer = setTimeout(() => {
      this._gapTimer = null;
      this._skipGap();
    }, this.gapTimeoutMs);
  }

  _clearGapTimer() {
    if (this._gapTimer !== null) clearTimeout(this._gapTimer);
    this._gapTimer = null;
  }

  _reset(reason) {
    this._buffer.clear();
    this._expected = null;
    this._lastTs = 0;
    this.ended = null;
    this._clearGapTimer();
    this.pendingRequests.clear();
    this._resolvedIds.clear();
    this._epoch += 1;
    this._emit("reset", { reason });
  }

  _deliver(env) {
    if (typeof env.ts === "number" && env.ts > this._lastTs) this._lastTs = env.ts;
    if (env.type === "session.hello") {
      this.hello = env.data;
      // the agent names its control method (BRIDGE_CONTROL_METHOD); an explicit option wins
      const method = env.data?.control?.method;
      if (!this._fixedMethod && typeof method === "string" && method) this.controlMethod = method;
    }
    // a request a sync ack already announced (its envelope was still on the way) is not announced twice
    let announce = true;
    if (env.type === "hitl.request") {
      announce = !this.pendingRequests.has(env.data?.request_id);
      this.pendingRequests.set(env.data.request_id, env.data);
    }
    if (env.type === "hitl.resolved") {
      this.pendingRequests.delete(env.data.request_id);
      this._rememberResolved(env.data.request_id);
    }
    if (env.type === "session.ended") {
      this.ended = env.data;
      // every open request resolved before it: one still listed lost its hitl.resolved
      const base = { v: PROTOCOL_VERSION, seq: null, ts: env.ts };
      for (const id of [...this.pendingRequests.keys()]) this._outcomeLost(id, base);
    }
    this._emit("envelope", env);
    this._emit("*", env);
    if (announce) this._emit(env.type, env.data, env);
    if (env.type === "session.hello" && Array.isArray(env.data?.pending)) this._learnPending(env.data.pending, env);
  }

  /** A hello (or a sync ack) lists the approvals open when it was sent (`pending`): a client
   *  that joined after their `hitl.request`, or lost it, learns them here, announced as
   *  "hitl.request" callbacks whose envelope is `base` (the hello: its `ts`, so `deadline - ts`
   *  is the time left) with their `turn`. Returns the ids listed. */
  _learnPending(pending, base) {
    const listed = new Set();
    for (const item of pending) {
      if (item === null || typeof item !== "object" || typeof item.request_id !== "string") continue;
      listed.add(item.request_id);
      if (this.pendingRequests.has(item.request_id) || this._resolvedIds.has(item.request_id)) continue;
      const { turn = null, ...data } = item;
      this.pendingRequests.set(data.request_id, data);
      this._emit("hitl.request", data, { ...base, type: "hitl.request", turn, data });
    }
    return listed;
  }

  /** A request that ended without its `hitl.resolved` reaching us: removed, and announced to
   *  "hitl.resolved" listeners with `outcome: null`. */
  _outcomeLost(id, base) {
    const request = this.pendingRequests.get(id);
    if (request === undefined) return;
    this.pendingRequests.delete(id);
    this._rememberResolved(id);
    const data = { request_id: id, call_id: request.call_id ?? null, tool: request.tool ?? null,
      outcome: null, by: null, modified: false, reason: null };
    this._emit("hitl.resolved", data, { ...base, type: "hitl.resolved", turn: null, data });
  }

  _rememberResolved(id) {
    this._resolvedIds.delete(id);
    this._resolvedIds.add(id);
    if (this._resolvedIds.size > 256) this._resolvedIds.delete(this._resolvedIds.values().next().value);
  }

  _emit(type, ...args) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const cb of [...set]) {
      try {
        cb(...args);
      } catch (err) {
        // a broken listener must not stop delivery to the others
        console.error(`voice-agent-events: a "${type}" listener failed`, err);
      }
    }
  }
}
