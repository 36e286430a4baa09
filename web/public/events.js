// The agent's bridge events, through the bridge's JS helper (bridge/client/, served at
// /vendor/bridge/): envelopes in seq order as callbacks, control messages over RPC.
// This adapter maps the helper onto the page's handlers and turns an error reply from the
// agent into a rejected promise carrying the protocol's error code.

import { VoiceAgentEvents } from '/vendor/bridge/voice-agent-events.js';

const HANDLERS = {
  'session.hello': 'onHello',
  'tool.started': 'onToolStarted',
  'tool.finished': 'onToolFinished',
  'hitl.request': 'onHitlRequest',
  'hitl.resolved': 'onHitlResolved',
  'turn.done': 'onTurnDone',
  metrics: 'onMetrics',
  error: 'onError',
  'session.ended': 'onSessionEnded',
};

export class AgentReplyError extends Error {
  constructor({ code, message, fatal }) {
    super(message);
    this.code = code;
    this.fatal = Boolean(fatal);
  }
}

async function checked(replyPromise) {
  const reply = await replyPromise;
  if (reply?.type === 'error') throw new AgentReplyError(reply.data ?? {});
  return reply;
}

/** Subscribe `handlers` (onHello, onToolStarted, ...) to the room's agent events. */
export function attachEvents(room, handlers, options = {}) {
  const events = new VoiceAgentEvents(room, options);
  for (const [type, name] of Object.entries(HANDLERS)) {
    if (handlers[name]) events.on(type, handlers[name]);
  }
  events.on('protocol-error', (info) => handlers.onProtocolError?.(`unreadable event from the agent (${info.reason})`));
  events.on('gap', ({ missing }) => handlers.onProtocolError?.(`${missing} event(s) from the agent were lost`));
  events.start();
  return {
    respond: (requestId, decision) => checked(events.respond(requestId, decision)),
    interrupt: () => checked(events.interrupt()),
    sendText: (text) => checked(events.sendText(text)),
    close: () => events.stop(),
  };
}
