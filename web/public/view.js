// DOM rendering for the page. Everything shown comes from the network, so text is set with
// textContent only (never innerHTML). Elements carry data-* attributes describing their state;
// the browser tests read those together with the visible text.

const AGENT_STATES = {
  initializing: 'starting',
  idle: 'idle',
  listening: 'listening',
  thinking: 'thinking',
  speaking: 'speaking',
};

const HITL_OUTCOMES = {
  approved: 'Approved',
  rejected: 'Rejected',
  timeout: 'Timed out',
  cancelled: 'Cancelled',
};

// what a person is told when the agent ends the session (`session.ended` reasons)
const SESSION_ENDED = {
  shutdown: 'The agent is restarting. Connect again to start a new session.',
  inactivity: 'The agent ended the session after a long silence. Connect again to talk.',
  participant_left: 'The session has ended.',
  error: 'The session ended because of an error. Connect again to retry.',
};

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('data-')) node.setAttribute(key, value);
    else node[key] = value;
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function clearEmpty(container) {
  container.querySelector(':scope > .empty')?.remove();
}

function prettyJson(value) {
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** Seconds (rounded up) until `deadlineLocalMs`, never negative. */
export function secondsLeft(deadlineLocalMs, nowMs = Date.now()) {
  return Math.max(0, Math.ceil((deadlineLocalMs - nowMs) / 1000));
}

/** "123 ms" / "1.25 s" / plain value, by the metric's name and type. */
export function formatMetric(key, value) {
  if (typeof value !== 'number') return String(value);
  if (/_ms$/.test(key)) return `${Math.round(value)} ms`;
  if (/(_s|_sec|_seconds|latency|delay|ttft|ttfb|duration)$/.test(key)) {
    return value < 10 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(1)} s`;
  }
  return Number.isInteger(value) ? String(value) : value.toFixed(3);
}

export class View {
  constructor(root = document) {
    this.root = root;
    this.$ = (id) => root.getElementById(id);
    this.lines = new Map(); // transcript segment id -> <li>
    this.tools = new Map(); // call_id -> card
    this.hitl = new Map(); // request_id -> {card, timer, deadline}
    this.turnRows = new Map(); // turn id -> <tr>
  }

  setConnection(state, label) {
    const pill = this.$('connection');
    pill.dataset.state = state;
    pill.textContent = label ?? state[0].toUpperCase() + state.slice(1);
    const connected = state === 'connected';
    for (const id of ['mic', 'interrupt', 'text-input', 'text-send']) this.$(id).disabled = !connected;
    this.$('connect').textContent = state === 'disconnected' ? 'Connect' : 'Disconnect';
    this.$('room').disabled = state !== 'disconnected';
    this.$('name').disabled = state !== 'disconnected';
  }

  setAgentState(state) {
    const pill = this.$('agent-state');
    if (!state) {
      pill.dataset.state = 'none';
      pill.textContent = 'Agent: not here';
      return;
    }
    pill.dataset.state = state;
    pill.textContent = `Agent: ${AGENT_STATES[state] ?? state}`;
  }

  setMicrophone(on) {
    const button = this.$('mic');
    button.setAttribute('aria-pressed', String(on));
    button.textContent = on ? 'Microphone on' : 'Microphone off';
  }

  showBanner(message) {
    const banner = this.$('banner');
    banner.textContent = message ?? '';
    banner.hidden = !message;
  }

  /** Create or update one transcript line (one segment of one speaker). */
  upsertLine(segmentId, speaker, text, final) {
    let line = this.lines.get(segmentId);
    if (!line) {
      line = el('li', { class: 'line', 'data-speaker': speaker, 'data-segment': segmentId });
      line.append(el('span', { class: 'who' }, speaker === 'user' ? 'You' : 'Agent'), el('span', { class: 'text' }));
      this.lines.set(segmentId, line);
      this.$('transcript').append(line);
    }
    line.dataset.final = String(final);
    line.querySelector('.text').textContent = text;
    const list = this.$('transcript');
    list.scrollTop = list.scrollHeight;
  }

  toolStarted(data) {
    const tools = this.$('tools');
    clearEmpty(tools);
    const card = el('div', { class: 'card tool', 'data-call-id': data.call_id, 'data-state': 'running' });
    const title = el('div', { class: 'title' });
    title.append(el('span', { class: 'name' }, data.tool), el('span', { class: 'status' }, 'running…'));
    card.append(title);
    if (data.arguments) card.append(el('pre', { class: 'args' }, prettyJson(data.arguments)));
    this.tools.set(data.call_id, card);
    tools.prepend(card);
  }

  toolFinished(data) {
    let card = this.tools.get(data.call_id);
    if (!card) {
      this.toolStarted({ call_id: data.call_id, tool: data.tool });
      card = this.tools.get(data.call_id);
    }
    card.dataset.state = data.status;
    const label = { ok: 'done', error: 'failed', cancelled: 'cancelled' }[data.status] ?? data.status;
    card.querySelector('.status').textContent = label;
    if (data.error) card.append(el('p', { class: 'detail error' }, data.error));
    if (data.result !== undefined && data.result !== null) {
      card.append(el('pre', { class: 'result' }, typeof data.result === 'string' ? data.result : prettyJson(data.result)));
    }
  }

  /**
   * Show an approval request. `deadlineLocalMs` is the deadline on this browser's clock;
   * `onDecide(decision)` is called with 'approve' or 'reject' and returns a promise of the reply.
   */
  /** `mine`: the request is addressed to this page's participant (or to nobody in particular). */
  hitlRequest(data, deadlineLocalMs, onDecide, { mine = true } = {}) {
    const approvals = this.$('approvals');
    clearEmpty(approvals);
    const card = el('div', { class: 'card hitl', 'data-request-id': data.request_id, 'data-state': 'pending' });
    const title = el('div', { class: 'title' });
    title.append(el('span', { class: 'name' }, data.tool), el('span', { class: 'status' }, mine ? 'needs your approval' : `needs approval from ${data.for}`));
    card.append(title, el('p', { class: 'prompt' }, data.prompt));
    if (data.arguments) card.append(el('pre', { class: 'args' }, prettyJson(data.arguments)));
    const actions = el('div', { class: 'actions' });
    const approve = el('button', { type: 'button', class: 'approve' }, 'Approve');
    const reject = el('button', { type: 'button', class: 'reject' }, 'Reject');
    const countdown = el('span', { class: 'countdown', 'aria-live': 'off' });
    actions.append(approve, reject, countdown);
    card.append(actions);
    approvals.prepend(card);

    const entry = { card, timer: null, deadline: deadlineLocalMs };
    this.hitl.set(data.request_id, entry);
    const tick = () => {
      const left = secondsLeft(deadlineLocalMs);
      countdown.dataset.seconds = String(left);
      countdown.textContent = left > 0 ? `${left} s left` : 'time is up';
      if (left <= 0) {
        clearInterval(entry.timer);
        if (['pending', 'watching'].includes(card.dataset.state)) this.#finishHitl(entry, 'expired', 'No answer in time.');
      }
    };
    tick();
    entry.timer = setInterval(tick, 250);

    const decide = async (decision) => {
      approve.disabled = true;
      reject.disabled = true;
      card.dataset.state = 'sending';
      card.querySelector('.status').textContent = decision === 'approve' ? 'approving…' : 'rejecting…';
      try {
        await onDecide(decision);
        if (card.dataset.state === 'sending') {
          card.dataset.state = 'sent';
          card.querySelector('.status').textContent = decision === 'approve' ? 'approved, waiting for the agent' : 'rejected, waiting for the agent';
        }
      } catch (err) {
        if (card.dataset.state !== 'sending') return;
        const message = err?.message ?? String(err);
        const final = err?.fatal || ['already_resolved', 'expired', 'unknown_request'].includes(err?.code);
        if (final) {
          this.#finishHitl(entry, 'expired', message);
        } else if (err?.code === 'forbidden') {
          // someone else answers this one: keep watching it until hitl.resolved or the deadline
          card.dataset.state = 'watching';
          card.querySelector('.actions .approve')?.remove();
          card.querySelector('.actions .reject')?.remove();
          card.querySelector('.status').textContent = `not yours to answer: ${message}`;
        } else {
          card.dataset.state = 'pending';
          card.querySelector('.status').textContent = `not sent: ${message}`;
          approve.disabled = false;
          reject.disabled = false;
        }
      }
    };
    approve.addEventListener('click', () => decide('approve'));
    reject.addEventListener('click', () => decide('reject'));
  }

  hitlResolved(data) {
    const entry = this.hitl.get(data.request_id);
    if (!entry) return;
    if (data.outcome == null) {
      // the helper's sync after lost events: the agent no longer lists it, its outcome was lost
      this.#finishHitl(entry, 'expired', 'No longer open (its outcome did not reach this page).');
      return;
    }
    const who = data.by ? ` by ${data.by}` : '';
    const how = data.modified ? ' (with changed arguments)' : '';
    const why = data.reason ? ` - ${data.reason}` : '';
    this.#finishHitl(entry, data.outcome, `${HITL_OUTCOMES[data.outcome] ?? data.outcome}${who}${how}${why}`);
  }

  #finishHitl(entry, state, text) {
    clearInterval(entry.timer);
    const { card } = entry;
    card.dataset.state = state;
    card.querySelector('.actions')?.remove();
    card.querySelector('.status').textContent = state === 'expired' ? 'closed' : state;
    let outcome = card.querySelector('.outcome');
    if (!outcome) {
      outcome = el('p', { class: 'outcome' });
      card.append(outcome);
    }
    outcome.textContent = text;
  }

  metrics(turn, data) {
    const body = this.$('latency').tBodies[0];
    const key = turn ?? `#${body.rows.length + 1}`;
    let row = this.turnRows.get(key);
    if (!row) {
      row = el('tr', { 'data-turn': key });
      row.append(el('td', { class: 'turn' }, turn ? String(turn) : key), el('td', { class: 'values' }));
      this.turnRows.set(key, row);
      body.prepend(row);
    }
    const cell = row.querySelector('.values');
    for (const [name, value] of Object.entries(data)) {
      if (value === null || value === undefined) continue;
      let metric = cell.querySelector(`[data-metric="${CSS.escape(name)}"]`);
      if (typeof value === 'boolean') {
        // a flag (e.g. `interrupted`): its name when true, nothing when false
        if (!value) { metric?.remove(); continue; }
        if (!metric) cell.append((metric = el('span', { class: 'metric flag', 'data-metric': name })));
        metric.replaceChildren(el('b', {}, name.replace(/_/g, ' ')));
        continue;
      }
      if (!metric) {
        metric = el('span', { class: 'metric', 'data-metric': name });
        cell.append(metric);
      }
      const label = name.replace(/_(ms|s|sec|seconds)$/, '').replace(/_/g, ' ');
      metric.replaceChildren(el('b', {}, label), document.createTextNode(` ${formatMetric(name, value)}`));
    }
  }

  error(code, message, fatal = false) {
    const list = this.$('errors');
    clearEmpty(list);
    const item = el('li', { 'data-code': code, 'data-fatal': String(fatal) }, `${fatal ? 'Fatal: ' : ''}${message}${code ? ` (${code})` : ''}`);
    list.prepend(item);
    if (fatal) this.showBanner(message);
  }

  /** The agent ended the session (`session.ended`): say why, and what to do, before it leaves. */
  sessionEnded(reason) {
    const banner = this.$('banner');
    banner.dataset.ended = reason ?? '';
    // a fatal error already put its own message in the banner
    if (reason === 'error' && !banner.hidden) return;
    this.showBanner(SESSION_ENDED[reason] ?? `The agent ended the session (${reason}). Connect again to start a new one.`);
  }

  /** A typed message shown at once, before any transcript arrives for it. */
  typedLine(text) {
    this.upsertLine(`typed-${crypto.randomUUID()}`, 'user', text, true);
  }
}
