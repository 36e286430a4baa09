// The page: join a room with a token from /token, talk, and watch what the agent does.
// livekit-client is served from /vendor (pinned in web/package.json); the bridge helper
// (bridge/client/) turns the agent's `voice-agent.events` stream into callbacks.
// `window.__voiceAgentOptions`, if a script sets it, overrides the helper's options
// (the browser tests use it to make the reorder wait unbounded).

import { Room, RoomEvent, Track, ParticipantKind } from '/vendor/livekit-client.esm.mjs';
import { View } from './view.js';
import { attachTranscription } from './transcript.js';
import { attachEvents } from './events.js';

const AGENT_STATE_ATTRIBUTE = 'lk.agent.state';

const view = new View(document);
const $ = (id) => document.getElementById(id);

let room = null;
let link = null;

// A new room's name is all that keeps others out of it: anyone who knows it can get a token for
// it from /token and listen in. 16 characters from 32 (5 bits each, no modulo bias) = 80 bits.
function randomId(n = 16) {
  const bytes = crypto.getRandomValues(new Uint8Array(n));
  return Array.from(bytes, (b) => 'abcdefghijklmnopqrstuvwxyz234567'[b & 31]).join('');
}

function isAgent(participant) {
  return Boolean(participant?.isAgent) || participant?.kind === ParticipantKind.AGENT;
}

function refreshAgentState() {
  const agent = room && [...room.remoteParticipants.values()].find(isAgent);
  view.setAgentState(agent ? agent.attributes?.[AGENT_STATE_ATTRIBUTE] ?? 'initializing' : null);
}

async function fetchToken(roomName, name) {
  const resp = await fetch('/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    // the server picks our identity (the token's); we only name the room and, optionally, ourselves
    body: JSON.stringify({ room: roomName, name: name || undefined }),
  });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error ?? `token request failed (${resp.status})`);
  if (!body.url) throw new Error('the server did not say where LiveKit is (set LIVEKIT_PUBLIC_URL)');
  return body;
}

async function setMicrophone(on) {
  try {
    await room.localParticipant.setMicrophoneEnabled(on);
    view.setMicrophone(on);
  } catch (err) {
    view.setMicrophone(false);
    view.error('microphone', `Microphone unavailable: ${err?.message ?? err}`);
  }
}

function wireRoom(r, topic) {
  r.on(RoomEvent.ParticipantConnected, refreshAgentState)
    .on(RoomEvent.ParticipantDisconnected, refreshAgentState)
    .on(RoomEvent.ParticipantAttributesChanged, refreshAgentState)
    .on(RoomEvent.TrackSubscribed, (track) => {
      if (track.kind === Track.Kind.Audio) $('audio').append(track.attach());
    })
    .on(RoomEvent.TrackUnsubscribed, (track) => {
      for (const element of track.detach()) element.remove();
    })
    .on(RoomEvent.Reconnecting, () => view.setConnection('reconnecting'))
    .on(RoomEvent.Reconnected, () => view.setConnection('connected'))
    .on(RoomEvent.Disconnected, () => {
      link?.close();
      link = null;
      room = null;
      view.setConnection('disconnected');
      view.setAgentState(null);
      view.setMicrophone(false);
    });
  attachTranscription(r, view);
  link = attachEvents(r, {
    onHello: (data) => {
      const caps = new Set(data.capabilities ?? []);
      $('interrupt').hidden = !caps.has('interrupt');
      $('text-form').hidden = !caps.has('user_text');
    },
    onToolStarted: (data) => view.toolStarted(data),
    onToolFinished: (data) => view.toolFinished(data),
    onHitlRequest: (data, envelope) => {
      // the deadline is on the agent's clock; count down the same span on ours
      const deadlineLocal = Date.now() + (data.deadline - envelope.ts);
      const mine = data.for == null || data.for === r.localParticipant?.identity;
      view.hitlRequest(data, deadlineLocal, (decision) => link.respond(data.request_id, decision), { mine });
    },
    onHitlResolved: (data) => view.hitlResolved(data),
    onMetrics: (data, envelope) => view.metrics(envelope.turn, data),
    onError: (data) => view.error(data.code, data.message, data.fatal),
    onSessionEnded: (data) => view.sessionEnded(data.reason),
    onProtocolError: (message) => view.error('protocol', message),
  }, { ...(topic ? { topic } : {}), ...(window.__voiceAgentOptions ?? {}) });
}

async function connect() {
  const roomName = $('room').value.trim();
  view.showBanner(null);
  view.setConnection('connecting', 'Connecting…');
  try {
    // `topic`: the agent's events topic (BRIDGE_TOPIC), as the server knows it
    const { url, token, topic } = await fetchToken(roomName, $('name').value.trim());
    room = new Room({ adaptiveStream: true, dynacast: true });
    wireRoom(room, topic);
    await room.connect(url, token);
    view.setConnection('connected');
    refreshAgentState();
    await room.startAudio().catch(() => {});
    await setMicrophone(true);
  } catch (err) {
    view.showBanner(`Could not connect: ${err?.message ?? err}`);
    const r = room;
    room = null;
    link?.close();
    link = null;
    await r?.disconnect().catch(() => {});
    view.setConnection('disconnected');
  }
}

function init() {
  const params = new URLSearchParams(location.search);
  // new rooms get the prefix the token endpoint accepts (WEB_ROOM_PREFIX), written in by the server
  const prefix = document.querySelector('meta[name="room-prefix"]')?.content || 'web-';
  $('room').value = params.get('room') ?? `${prefix}${randomId()}`;
  view.setConnection('disconnected');
  view.setAgentState(null);

  $('join').addEventListener('submit', (event) => {
    event.preventDefault();
    if (room) room.disconnect();
    else connect();
  });
  $('mic').addEventListener('click', () => {
    if (room) setMicrophone($('mic').getAttribute('aria-pressed') !== 'true');
  });
  $('interrupt').addEventListener('click', () => {
    link?.interrupt().catch((err) => view.error(err.code ?? 'interrupt', err.message));
  });
  $('text-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('text-input');
    const text = input.value.trim();
    if (!text || !link) return;
    input.value = '';
    view.typedLine(text);
    link.sendText(text).catch((err) => view.error(err.code ?? 'user_text', err.message));
  });
}

init();
