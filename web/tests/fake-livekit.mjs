// A stand-in for livekit-client, served at /vendor/livekit-client.esm.mjs when the web server runs
// in test mode. It has the same exports, event names and method shapes the page and the bridge
// helper use (checked against the real bundle by livekit-api.test.mjs), and no network: the test
// drives it through `window.__fakeLiveKit` - adds an agent participant, changes its attributes,
// pushes text streams (`lk.transcription`, the bridge's events topic) and records what the page
// sends (RPC calls, microphone switches, the token it connected with).

export const RoomEvent = Object.freeze({
  Connected: 'connected',
  Reconnecting: 'reconnecting',
  Reconnected: 'reconnected',
  Disconnected: 'disconnected',
  ConnectionStateChanged: 'connectionStateChanged',
  ParticipantConnected: 'participantConnected',
  ParticipantDisconnected: 'participantDisconnected',
  ParticipantAttributesChanged: 'participantAttributesChanged',
  TrackSubscribed: 'trackSubscribed',
  TrackUnsubscribed: 'trackUnsubscribed',
  LocalTrackPublished: 'localTrackPublished',
  AudioPlaybackStatusChanged: 'audioPlaybackChanged',
  MediaDevicesError: 'mediaDevicesError',
});

export const ConnectionState = Object.freeze({
  Disconnected: 'disconnected',
  Connecting: 'connecting',
  Connected: 'connected',
  Reconnecting: 'reconnecting',
  SignalReconnecting: 'signalReconnecting',
});

export const ParticipantKind = Object.freeze({
  STANDARD: 0, 0: 'STANDARD',
  INGRESS: 1, 1: 'INGRESS',
  EGRESS: 2, 2: 'EGRESS',
  SIP: 3, 3: 'SIP',
  AGENT: 4, 4: 'AGENT',
});

export const Track = Object.freeze({
  Kind: Object.freeze({ Audio: 'audio', Video: 'video', Unknown: 'unknown' }),
  Source: Object.freeze({ Camera: 'camera', Microphone: 'microphone', ScreenShare: 'screen_share', Unknown: 'unknown' }),
});

class Emitter {
  #listeners = new Map();
  on(event, cb) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(cb);
    return this;
  }
  off(event, cb) {
    this.#listeners.get(event)?.delete(cb);
    return this;
  }
  once(event, cb) {
    const wrapper = (...args) => {
      this.off(event, wrapper);
      cb(...args);
    };
    return this.on(event, wrapper);
  }
  emit(event, ...args) {
    for (const cb of [...(this.#listeners.get(event) ?? [])]) cb(...args);
    return true;
  }
}

export class RpcError extends Error {
  constructor(code, message, data) {
    super(message);
    this.code = code;
    this.data = data;
  }
}

/** Async-iterable text stream with livekit-client's TextStreamReader surface. */
class FakeTextStreamReader {
  #chunks = [];
  #waiters = [];
  #done = false;

  constructor(info) {
    this.info = info;
  }

  push(chunk) {
    const waiter = this.#waiters.shift();
    if (waiter) waiter({ value: chunk, done: false });
    else this.#chunks.push(chunk);
  }

  close(trailerAttributes) {
    if (trailerAttributes) this.info.attributes = { ...this.info.attributes, ...trailerAttributes };
    this.#done = true;
    for (const waiter of this.#waiters.splice(0)) waiter({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this.#chunks.length) return Promise.resolve({ value: this.#chunks.shift(), done: false });
        if (this.#done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.#waiters.push(resolve));
      },
      return: () => Promise.resolve({ value: undefined, done: true }),
    };
  }

  async readAll() {
    let text = '';
    for await (const chunk of this) text += chunk;
    return text;
  }
}

class FakeParticipant extends Emitter {
  constructor(identity, { kind = ParticipantKind.STANDARD, attributes = {}, name = '' } = {}) {
    super();
    this.identity = identity;
    this.sid = `PA_${identity}`;
    this.name = name;
    this.kind = kind;
    this.attributes = { ...attributes };
  }
  get isAgent() {
    return this.kind === ParticipantKind.AGENT;
  }
}

class FakeLocalParticipant extends FakeParticipant {
  constructor(room) {
    super('');
    this.room = room;
    this.isMicrophoneEnabled = false;
  }

  async setMicrophoneEnabled(enabled) {
    harness.micCalls.push(enabled);
    if (enabled && harness.microphoneError) throw new Error(harness.microphoneError);
    this.isMicrophoneEnabled = enabled;
  }

  async performRpc({ destinationIdentity, method, payload, responseTimeout }) {
    const call = { destinationIdentity, method, payload, responseTimeout };
    harness.rpcCalls.push(call);
    const reply = harness.rpcReply(call);
    if (reply instanceof Error) throw reply;
    return reply;
  }

  async sendText(text, options = {}) {
    harness.sentTexts.push({ text, ...options });
    return { id: `TS_${harness.sentTexts.length}` };
  }
}

function decodeJwtPayload(token) {
  const part = String(token).split('.')[1] ?? '';
  const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
  return JSON.parse(json);
}

export class Room extends Emitter {
  constructor(options = {}) {
    super();
    this.options = options;
    this.state = ConnectionState.Disconnected;
    this.name = '';
    this.localParticipant = new FakeLocalParticipant(this);
    this.remoteParticipants = new Map();
    this.textStreamHandlers = new Map();
    this.canPlaybackAudio = true;
    harness.rooms.push(this);
  }

  async connect(url, token) {
    harness.connects.push({ url, token });
    if (harness.connectError) throw new Error(harness.connectError);
    const claims = decodeJwtPayload(token);
    this.localParticipant.identity = claims.sub;
    this.name = claims.video?.room ?? '';
    this.state = ConnectionState.Connected;
    this.emit(RoomEvent.ConnectionStateChanged, this.state);
    this.emit(RoomEvent.Connected);
  }

  async disconnect() {
    if (this.state === ConnectionState.Disconnected) return;
    this.state = ConnectionState.Disconnected;
    this.emit(RoomEvent.ConnectionStateChanged, this.state);
    this.emit(RoomEvent.Disconnected);
  }

  async startAudio() {
    this.canPlaybackAudio = true;
  }

  registerTextStreamHandler(topic, callback) {
    if (this.textStreamHandlers.has(topic)) {
      throw new Error(`A text stream handler for topic "${topic}" has already been set.`);
    }
    this.textStreamHandlers.set(topic, callback);
  }

  unregisterTextStreamHandler(topic) {
    this.textStreamHandlers.delete(topic);
  }
}

let streamCounter = 0;

const harness = {
  rooms: [],
  connects: [],
  rpcCalls: [],
  micCalls: [],
  sentTexts: [],
  microphoneError: null,
  connectError: null,

  get room() {
    return this.rooms.at(-1);
  },

  /** Default RPC reply: an ack of the message, as the bridge sends it. */
  rpcReply(call) {
    const message = JSON.parse(call.payload);
    return JSON.stringify({
      v: 1,
      type: 'ack',
      id: message.id ?? null,
      ts: Date.now(),
      data: { type: message.type, request_id: message.data?.request_id ?? null },
    });
  },

  addParticipant(identity, { agent = false, attributes = {}, name = '' } = {}) {
    const kind = agent ? ParticipantKind.AGENT : ParticipantKind.STANDARD;
    const participant = new FakeParticipant(identity, { kind, attributes, name });
    this.room.remoteParticipants.set(identity, participant);
    this.room.emit(RoomEvent.ParticipantConnected, participant);
    return participant;
  },

  setAttributes(identity, changed) {
    const participant = this.room.remoteParticipants.get(identity);
    Object.assign(participant.attributes, changed);
    participant.emit('attributesChanged', changed);
    this.room.emit(RoomEvent.ParticipantAttributesChanged, changed, participant);
  },

  removeParticipant(identity) {
    const participant = this.room.remoteParticipants.get(identity);
    this.room.remoteParticipants.delete(identity);
    this.room.emit(RoomEvent.ParticipantDisconnected, participant);
  },

  /**
   * Deliver one text stream: `chunks` arrive one by one (yielding to the page between them),
   * then the stream closes, merging `trailer` into its attributes like a real trailer does.
   * Resolves once the page's handler has finished with it.
   */
  async textStream({ topic, from, chunks, attributes = {}, trailer }) {
    const handler = this.room.textStreamHandlers.get(topic);
    if (!handler) return false;
    streamCounter += 1;
    const reader = new FakeTextStreamReader({
      id: `TS_${streamCounter}`,
      topic,
      mimeType: 'text/plain',
      timestamp: Date.now(),
      attributes: { ...attributes },
    });
    const handled = Promise.resolve(handler(reader, { identity: from }));
    for (const chunk of chunks) {
      reader.push(chunk);
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    reader.close(trailer);
    await handled;
    return true;
  },

  disconnect() {
    return this.room.disconnect();
  },
};

globalThis.__fakeLiveKit = harness;
