// PROVISIONAL: replaced by the bridge's JS helper (bridge/client/) once it is committed.
// Subscribes to the agent's `voice-agent.events` envelopes and sends control messages over RPC.

const TOPIC = 'voice-agent.events';
const CONTROL_METHOD = 'voice-agent.control';

export function attachEvents(room, handlers) {
  let agentIdentity = null;
  let method = CONTROL_METHOD;
  let lastSeq = 0;
  const pending = new Map();

  const dispatch = (env) => {
    const h = {
      'session.hello': handlers.onHello,
      'tool.started': handlers.onToolStarted,
      'tool.finished': handlers.onToolFinished,
      'hitl.request': handlers.onHitlRequest,
      'hitl.resolved': handlers.onHitlResolved,
      metrics: handlers.onMetrics,
      error: handlers.onError,
    }[env.type];
    h?.(env.data, env);
  };

  room.registerTextStreamHandler(TOPIC, async (reader, info) => {
    let env;
    try {
      env = JSON.parse(await reader.readAll());
    } catch {
      handlers.onProtocolError?.('unreadable event');
      return;
    }
    if (env?.v !== 1) return;
    if (env.type === 'session.hello') {
      agentIdentity = info.identity;
      method = env.data?.control?.method ?? method;
      lastSeq = env.seq - 1;
    }
    pending.set(env.seq, env);
    while (pending.has(lastSeq + 1)) {
      const next = pending.get(lastSeq + 1);
      pending.delete(lastSeq + 1);
      lastSeq += 1;
      dispatch(next);
    }
  });

  const send = async (message) => {
    if (!agentIdentity) throw new Error('the agent has not said hello yet');
    const raw = await room.localParticipant.performRpc({
      destinationIdentity: agentIdentity,
      method,
      payload: JSON.stringify({ v: 1, ...message }),
    });
    const reply = JSON.parse(raw);
    if (reply.type === 'error') {
      const err = new Error(reply.data.message);
      err.code = reply.data.code;
      err.fatal = reply.data.fatal;
      throw err;
    }
    return reply;
  };

  return {
    respond: (requestId, decision) => send({ type: 'hitl.respond', data: { request_id: requestId, decision } }),
    interrupt: () => send({ type: 'agent.interrupt', data: {} }),
    sendText: (text) => send({ type: 'user.text', data: { text } }),
    close: () => room.unregisterTextStreamHandler(TOPIC),
  };
}
