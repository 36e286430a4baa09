// The page in a real browser (Debian's Chromium via playwright-core), served by the real web
// server in test mode, with the fake room module in place of livekit-client. A scripted session
// (agent joins, user speaks, a tool runs, an approval is requested, the agent answers) is fed in
// and the test checks what a person sees and what the page sends back.

import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { PUBLIC_URL, jwtClaims, launchBrowser, screenshotPath, startServer } from './harness.mjs';

const AGENT = 'agent-AJ_1';
const TOPIC = 'acme.events'; // the server's BRIDGE_TOPIC, which the page learns with its token

let server;
let browser;
let page;
let seq = 0;

/** Push one protocol v1 envelope from the agent (seq numbered unless given). */
function envelope(type, data, { turn = null, seqNo, ts = Date.now() } = {}) {
  const env = { v: 1, seq: seqNo ?? ++seq, ts, type, turn, data };
  return page.evaluate(
    ({ env, from, topic }) => window.__fakeLiveKit.textStream({ topic, from, chunks: [JSON.stringify(env)] }),
    { env, from: AGENT, topic: TOPIC },
  );
}

function transcription(from, segment, chunks, { final, trailer } = {}) {
  const attributes = { 'lk.segment_id': segment, 'lk.transcription_final': String(Boolean(final)) };
  return page.evaluate(
    (args) => window.__fakeLiveKit.textStream(args),
    { topic: 'lk.transcription', from, chunks, attributes, trailer },
  );
}

const fake = (fn, arg) => page.evaluate(fn, arg);
const text = (selector) => page.locator(selector).innerText();
const attr = (selector, name) => page.locator(selector).getAttribute(name);
const rpcCalls = () => fake(() => window.__fakeLiveKit.rpcCalls.map((c) => ({ ...c, payload: JSON.parse(c.payload) })));

before(async () => {
  server = await startServer({ env: { BRIDGE_TOPIC: TOPIC } });
  browser = await launchBrowser();
  page = await browser.newPage();
  page.on('pageerror', (err) => {
    throw err;
  });
  // envelopes held back for a missing seq wait for it however slow this machine is
  await page.addInitScript(() => {
    window.__voiceAgentOptions = { gapTimeoutMs: 10 * 60 * 1000 };
  });
  await page.goto(`${server.base}/?room=test-room`);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("new rooms get the server's room prefix (WEB_ROOM_PREFIX)", async () => {
  // the page always made web-xxxxxx rooms, which a server with another prefix refused
  const other = await startServer({ env: { WEB_ROOM_PREFIX: 'acme-' } });
  const fresh = await browser.newPage();
  try {
    await fresh.goto(`${other.base}/`);
    assert.match(await fresh.inputValue('#room'), /^acme-[a-z2-7]{16}$/);
    await fresh.goto(`${server.base}/`); // WEB_ROOM_PREFIX empty (any room): web-xxxxxx as before
    const first = await fresh.inputValue('#room');
    // the name is the room's only key (anyone who knows it gets a token): 16 random characters
    // of 32 = 80 bits, where 6 of 36 (about 31 bits) could be found by asking for tokens
    assert.match(first, /^web-[a-z2-7]{16}$/);
    await fresh.reload();
    assert.notEqual(await fresh.inputValue('#room'), first);
  } finally {
    await fresh.close();
    await other.stop();
  }
});

test('connects with a token from the endpoint and turns the microphone on', async () => {
  assert.equal(await text('#connection'), 'Disconnected');
  assert.equal(await page.inputValue('#room'), 'test-room');
  await page.fill('#name', 'Ada');
  await page.click('#connect');
  await page.locator('#connection[data-state="connected"]').waitFor();

  const connects = await fake(() => window.__fakeLiveKit.connects);
  assert.equal(connects.length, 1);
  assert.equal(connects[0].url, PUBLIC_URL);
  const claims = jwtClaims(connects[0].token);
  assert.equal(claims.video.room, 'test-room');
  assert.equal(claims.name, 'Ada');
  assert.match(claims.sub, /^web-[0-9a-f]{12}$/); // picked by the server, not the page
  assert.deepEqual(claims.roomConfig, { agents: [{ agentName: 'voice-agent' }], maxParticipants: 3 });

  assert.deepEqual(await fake(() => window.__fakeLiveKit.micCalls), [true]);
  assert.equal(await text('#mic'), 'Microphone on');
  assert.equal(await attr('#mic', 'aria-pressed'), 'true');
  assert.equal(await text('#connect'), 'Disconnect');
  assert.equal(await text('#agent-state'), 'Agent: not here');
});

test("shows the agent's state from lk.agent.state", async () => {
  await fake((id) => window.__fakeLiveKit.addParticipant(id, { agent: true, attributes: { 'lk.agent.state': 'initializing' } }), AGENT);
  assert.equal(await text('#agent-state'), 'Agent: starting');
  await fake((id) => window.__fakeLiveKit.setAttributes(id, { 'lk.agent.state': 'listening' }), AGENT);
  assert.equal(await text('#agent-state'), 'Agent: listening');
  await envelope('session.hello', {
    protocol: 1,
    agent: 'voice-agent',
    capabilities: ['hitl', 'interrupt', 'user_text'],
    control: { method: 'voice-agent.control', max_message_bytes: 16384 },
    client: null,
    session: 'test-room',
  });
  // the hello's capabilities decide which controls are offered
  assert.ok(await page.locator('#interrupt').isVisible());
  assert.ok(await page.locator('#text-form').isVisible());
});

test('live transcript of both sides: interim, then final', async () => {
  const me = await fake(() => window.__fakeLiveKit.room.localParticipant.identity);
  await transcription(me, 'SG_user1', ["What's the weather"]);
  const userLine = page.locator('#transcript .line[data-speaker="user"]');
  assert.equal(await userLine.count(), 1);
  assert.equal(await userLine.locator('.text').innerText(), "What's the weather");
  assert.equal(await userLine.getAttribute('data-final'), 'false');

  await transcription(me, 'SG_user1', ["What's the weather in Paris?"], { final: true });
  assert.equal(await userLine.count(), 1, 'updates replace the interim line');
  assert.equal(await userLine.locator('.text').innerText(), "What's the weather in Paris?");
  assert.equal(await userLine.getAttribute('data-final'), 'true');
  assert.equal(await userLine.locator('.who').innerText(), 'You');

  await fake((id) => window.__fakeLiveKit.setAttributes(id, { 'lk.agent.state': 'thinking' }), AGENT);
  assert.equal(await text('#agent-state'), 'Agent: thinking');
});

test('tool cards and the approval prompt follow seq order', async () => {
  await envelope('tool.started', { call_id: 'call-1', tool: 'get_weather', arguments: { city: 'Paris' } }, { turn: 't1' });
  const weather = page.locator('.tool[data-call-id="call-1"]');
  assert.equal(await weather.getAttribute('data-state'), 'running');
  assert.equal(await weather.locator('.name').innerText(), 'get_weather');
  assert.equal(await weather.locator('.status').innerText(), 'running…');
  assert.deepEqual(JSON.parse(await weather.locator('.args').innerText()), { city: 'Paris' });

  // seq 4 arrives before seq 3: held back until the gap is filled
  const ts = Date.now();
  const hitlSeq = ++seq;
  await envelope('tool.finished', { call_id: 'call-1', tool: 'get_weather', status: 'ok', result: 'sunny, 21 C' }, { turn: 't1', seqNo: ++seq });
  assert.equal(await weather.getAttribute('data-state'), 'running');
  assert.equal(await page.locator('.hitl').count(), 0);

  await envelope(
    'hitl.request',
    {
      request_id: 'req-1',
      call_id: 'call-2',
      tool: 'send_email',
      prompt: 'Send the forecast to ada@example.com?',
      arguments: { to: 'ada@example.com', subject: 'Weather' },
      deadline: ts + 30_000,
      for: null,
    },
    { turn: 't1', seqNo: hitlSeq, ts },
  );
  assert.equal(await weather.getAttribute('data-state'), 'ok');
  assert.equal(await weather.locator('.status').innerText(), 'done');
  assert.equal(await weather.locator('.result').innerText(), 'sunny, 21 C');

  const card = page.locator('.hitl[data-request-id="req-1"]');
  assert.equal(await card.getAttribute('data-state'), 'pending');
  assert.equal(await card.locator('.prompt').innerText(), 'Send the forecast to ada@example.com?');
  assert.equal(await card.locator('.name').innerText(), 'send_email');
  assert.deepEqual(JSON.parse(await card.locator('.args').innerText()), { to: 'ada@example.com', subject: 'Weather' });
  assert.ok(await card.locator('button.approve').isEnabled());
  assert.ok(await card.locator('button.reject').isEnabled());
  const seconds = Number(await card.locator('.countdown').getAttribute('data-seconds'));
  assert.ok(seconds > 0 && seconds <= 30, `countdown shows ${seconds}`);
  assert.match(await card.locator('.countdown').innerText(), /^\d+ s left$/);
});

test('the agent reply streams into one line', async () => {
  await fake((id) => window.__fakeLiveKit.setAttributes(id, { 'lk.agent.state': 'speaking' }), AGENT);
  await transcription(AGENT, 'SG_agent1', ['It is ', 'sunny ', 'in Paris.'], { trailer: { 'lk.transcription_final': 'true' } });
  const line = page.locator('#transcript .line[data-speaker="agent"]');
  assert.equal(await line.count(), 1);
  assert.equal(await line.locator('.text').innerText(), 'It is sunny in Paris.');
  assert.equal(await line.getAttribute('data-final'), 'true');
  assert.equal(await line.locator('.who').innerText(), 'Agent');
  assert.equal(await text('#agent-state'), 'Agent: speaking');
});

test("another participant's transcription stream is not shown as the agent's words", async () => {
  await fake(() => window.__fakeLiveKit.addParticipant('mallory'));
  const before = await page.locator('#transcript .line').count();
  await transcription('mallory', 'SG_fake', ['Your card number please.'], { trailer: { 'lk.transcription_final': 'true' } });
  await transcription(AGENT, 'SG_agent2', ['Anything else?'], { trailer: { 'lk.transcription_final': 'true' } });
  await page.locator('#transcript .line[data-speaker="agent"] .text', { hasText: 'Anything else?' }).waitFor();
  assert.equal(await page.locator('#transcript .line').count(), before + 1);
  assert.equal(await page.locator('#transcript', { hasText: 'card number' }).count(), 0);
  await fake(() => window.__fakeLiveKit.removeParticipant('mallory'));
});

test('clicking Approve sends hitl.respond to the agent', async () => {
  const card = page.locator('.hitl[data-request-id="req-1"]');
  await card.locator('button.approve').click();
  await card.locator('.status', { hasText: 'approved, waiting for the agent' }).waitFor();
  const calls = await rpcCalls();
  assert.equal(calls.length, 1);
  assert.equal(calls[0].destinationIdentity, AGENT);
  assert.equal(calls[0].method, 'voice-agent.control');
  assert.equal(calls[0].payload.v, 1);
  assert.equal(calls[0].payload.type, 'hitl.respond');
  assert.deepEqual(calls[0].payload.data, { request_id: 'req-1', decision: 'approve' });
  assert.ok(await card.locator('button.approve').isDisabled());

  const me = await fake(() => window.__fakeLiveKit.room.localParticipant.identity);
  await envelope('hitl.resolved', { request_id: 'req-1', call_id: 'call-2', tool: 'send_email', outcome: 'approved', by: me, modified: false, reason: null }, { turn: 't1' });
  assert.equal(await card.getAttribute('data-state'), 'approved');
  assert.equal(await card.locator('.outcome').innerText(), `Approved by ${me}`);
  assert.equal(await card.locator('button').count(), 0, 'no buttons once decided');
});

test('a failing tool, latency and errors are shown', async () => {
  await envelope('tool.started', { call_id: 'call-2', tool: 'send_email', arguments: null }, { turn: 't1' });
  await envelope('tool.finished', { call_id: 'call-2', tool: 'send_email', status: 'error', result: null, error: 'SMTP server unreachable' }, { turn: 't1' });
  const mail = page.locator('.tool[data-call-id="call-2"]');
  assert.equal(await mail.getAttribute('data-state'), 'error');
  assert.equal(await mail.locator('.status').innerText(), 'failed');
  assert.equal(await mail.locator('.detail').innerText(), 'SMTP server unreachable');

  await envelope('turn.done', { reason: 'completed', text: 'It is sunny in Paris.' }, { turn: 't1' });
  await envelope('metrics', { e2e_latency: 0.82, llm_ttft: 0.31, tts_ttfb_ms: 120 }, { turn: 't1' });
  const row = page.locator('#latency tr[data-turn="t1"]');
  assert.equal(await row.locator('.turn').innerText(), 't1');
  assert.equal(await row.locator('[data-metric="e2e_latency"]').innerText(), 'e2e latency 820 ms');
  assert.equal(await row.locator('[data-metric="llm_ttft"]').innerText(), 'llm ttft 310 ms');
  assert.equal(await row.locator('[data-metric="tts_ttfb_ms"]').innerText(), 'tts ttfb 120 ms');
  // the agent's `interrupted` flag: named when true, gone when a later report says false
  await envelope('metrics', { e2e_ms: 900, interrupted: true }, { turn: 't2' });
  const cut = page.locator('#latency tr[data-turn="t2"]');
  assert.equal(await cut.locator('[data-metric="interrupted"]').innerText(), 'interrupted');
  await envelope('metrics', { interrupted: false }, { turn: 't2' });
  assert.equal(await cut.locator('[data-metric="interrupted"]').count(), 0);
  assert.equal(await cut.locator('[data-metric="e2e_ms"]').innerText(), 'e2e 900 ms');

  await envelope('error', { code: 'tts_failed', message: 'Speech synthesis failed', fatal: false }, { turn: 't1' });
  assert.equal(await text('#errors li[data-code="tts_failed"]'), 'Speech synthesis failed (tts_failed)');
  assert.ok(await page.locator('#banner').isHidden());
});

test('network text is never interpreted as HTML', async () => {
  await envelope('tool.started', { call_id: 'call-x', tool: '<img src=x onerror="window.__xss=1">', arguments: null });
  const card = page.locator('.tool[data-call-id="call-x"]');
  assert.equal(await card.locator('.name').innerText(), '<img src=x onerror="window.__xss=1">');
  assert.equal(await card.locator('img').count(), 0);
  assert.equal(await fake(() => window.__xss), undefined);
});

test('Reject, typed text and Interrupt reach the agent', async () => {
  const ts = Date.now();
  await envelope('hitl.request', { request_id: 'req-2', call_id: 'call-3', tool: 'delete_files', prompt: 'Delete 3 files?', arguments: null, deadline: ts + 20_000, for: null }, { ts });
  const card = page.locator('.hitl[data-request-id="req-2"]');
  await card.locator('button.reject').click();
  await card.locator('.status', { hasText: 'rejected, waiting for the agent' }).waitFor();

  await page.fill('#text-input', 'never mind');
  await page.click('#text-send');
  await page.locator('#transcript .line[data-speaker="user"] .text', { hasText: 'never mind' }).waitFor();
  await page.click('#interrupt');
  await page.waitForFunction(() => window.__fakeLiveKit.rpcCalls.length === 4);

  const calls = (await rpcCalls()).slice(1);
  assert.deepEqual(calls.map((c) => c.payload.type), ['hitl.respond', 'user.text', 'agent.interrupt']);
  assert.deepEqual(calls[0].payload.data, { request_id: 'req-2', decision: 'reject' });
  assert.deepEqual(calls[1].payload.data, { text: 'never mind' });
  assert.ok(calls.every((c) => c.destinationIdentity === AGENT && c.method === 'voice-agent.control'));

  await envelope('hitl.resolved', { request_id: 'req-2', call_id: 'call-3', tool: 'delete_files', outcome: 'rejected', by: 'system:timeout', modified: false, reason: 'not needed' });
  assert.equal(await card.getAttribute('data-state'), 'rejected');
  assert.equal(await card.locator('.outcome').innerText(), 'Rejected by system:timeout - not needed');
});

test('an error reply from the agent closes the prompt with its message', async () => {
  await fake(() => {
    window.__fakeLiveKit.rpcReply = (call) =>
      JSON.stringify({ v: 1, type: 'error', id: JSON.parse(call.payload).id, ts: Date.now(), data: { code: 'expired', message: 'That request already timed out.', fatal: false } });
  });
  const ts = Date.now();
  await envelope('hitl.request', { request_id: 'req-3', call_id: 'call-4', tool: 'book_table', prompt: 'Book a table for 2?', arguments: { people: 2 }, deadline: ts + 15_000, for: null }, { ts });
  const card = page.locator('.hitl[data-request-id="req-3"]');
  await card.locator('button.approve').click();
  await card.locator('.outcome').waitFor();
  assert.equal(await card.getAttribute('data-state'), 'expired');
  assert.equal(await card.locator('.outcome').innerText(), 'That request already timed out.');
  assert.equal(await card.locator('button').count(), 0);
});

test('screenshot of the whole session (kept outside the repository)', async () => {
  // The picture shows: "Connected" and "Agent: speaking" pills; the two-sided transcript
  // (user question, streamed agent answer, typed "never mind"); tool cards get_weather (done),
  // send_email (failed), the escaped <img> one (running); the two approval cards (Approved by
  // the user / Rejected); the t1 latency row and the tts_failed error.
  const file = screenshotPath('voice-page.png');
  await page.screenshot({ path: file, fullPage: true });
  assert.ok(statSync(file).size > 10_000);
  console.log(`screenshot: ${file}`);
});

test('a request for someone else says so, and a forbidden reply leaves it watching', async () => {
  await fake(() => {
    window.__fakeLiveKit.rpcReply = (call) =>
      JSON.stringify({ v: 1, type: 'error', id: JSON.parse(call.payload).id, ts: Date.now(), data: { code: 'forbidden', message: 'only bob may answer this request', fatal: false } });
  });
  const ts = Date.now();
  await envelope('hitl.request', { request_id: 'req-4', call_id: 'call-5', tool: 'send_email', prompt: 'Send it?', arguments: null, deadline: ts + 15_000, for: 'bob' }, { ts });
  const card = page.locator('.hitl[data-request-id="req-4"]');
  assert.equal(await card.locator('.status').innerText(), 'needs approval from bob');
  await card.locator('button.approve').click(); // an allowed supervisor could answer: the page cannot tell
  await card.locator('.status', { hasText: 'not yours to answer: only bob may answer this request' }).waitFor();
  assert.equal(await card.getAttribute('data-state'), 'watching');
  assert.equal(await card.locator('button').count(), 0);
  assert.equal(await card.locator('.countdown').count(), 1, 'the deadline still counts down');

  await envelope('hitl.resolved', { request_id: 'req-4', call_id: 'call-5', tool: 'send_email', outcome: 'approved', by: 'bob', modified: false, reason: null });
  assert.equal(await card.getAttribute('data-state'), 'approved');
  assert.equal(await card.locator('.outcome').innerText(), 'Approved by bob');
});

test('an approval asked before the page joined is shown from its hello, and answered on the method the hello names', async () => {
  await fake(() => {
    window.__fakeLiveKit.rpcCalls.length = 0;
    window.__fakeLiveKit.rpcReply = (call) =>
      JSON.stringify({ v: 1, type: 'ack', id: JSON.parse(call.payload).id, ts: Date.now(), data: { type: 'hitl.respond', request_id: 'req-9' } });
  });
  const me = await fake(() => window.__fakeLiveKit.room.localParticipant.identity);
  const ts = Date.now();
  const open = { request_id: 'req-9', call_id: 'call-9', tool: 'refund', prompt: 'Refund 20 EUR?', arguments: null, deadline: ts + 60_000, for: me, turn: 't7' };
  await envelope('session.hello', {
    protocol: 1, agent: 'assistant', capabilities: ['hitl', 'interrupt', 'user_text'],
    control: { method: 'acme.control', max_message_bytes: 8192 }, client: 'someone-else', session: 'test-room', pending: [open],
  }, { ts });
  const card = page.locator('.hitl[data-request-id="req-9"]');
  assert.equal(await card.locator('.prompt').innerText(), 'Refund 20 EUR?');
  assert.equal(await card.locator('.status').innerText(), 'needs your approval');
  assert.equal(await card.getAttribute('data-state'), 'pending');
  assert.ok(Number(await card.locator('.countdown').getAttribute('data-seconds')) > 0, 'counts down to the request\'s deadline');

  await card.locator('button.approve').click();
  await card.locator('.status', { hasText: 'approved, waiting for the agent' }).waitFor();
  const calls = await rpcCalls();
  assert.deepEqual(calls.map((c) => [c.method, c.payload.data]), [['acme.control', { request_id: 'req-9', decision: 'approve' }]]);
  await envelope('hitl.resolved', { request_id: 'req-9', call_id: 'call-9', tool: 'refund', outcome: 'approved', by: me, modified: false, reason: null }, { turn: 't7' });
  assert.equal(await card.getAttribute('data-state'), 'approved');
  assert.equal(await page.locator('.hitl[data-request-id="req-9"]').count(), 1, 'one card, not one per hello');
});

test('after lost events the page asks session.sync: a lost approval shows up, a lost outcome closes its card', async () => {
  const ts = Date.now();
  const me = await fake(() => window.__fakeLiveKit.room.localParticipant.identity);
  const gone = { request_id: 'req-20', call_id: 'call-20', tool: 'refund', prompt: 'Refund 5 EUR?', arguments: null, deadline: ts + 60_000, for: me };
  const open = { request_id: 'req-21', call_id: 'call-21', tool: 'refund', prompt: 'Refund 7 EUR?', arguments: null, deadline: ts + 60_000, for: me, turn: 't9' };
  await fake((pending) => {
    window.__fakeLiveKit.rpcCalls.length = 0;
    window.__fakeLiveKit.rpcReply = (call) => {
      const message = JSON.parse(call.payload);
      return JSON.stringify({ v: 1, type: 'ack', id: message.id, ts: Date.now(), data: { type: message.type, request_id: null, pending, truncated: false } });
    };
  }, [open]);
  await envelope('hitl.request', gone, { ts, turn: 't8' });
  const goneCard = page.locator('.hitl[data-request-id="req-20"]');
  assert.equal(await goneCard.getAttribute('data-state'), 'pending');
  // lost: req-20's hitl.resolved and req-21's hitl.request; then more than the helper's reorder
  // buffer (256) waits behind the hole, so it reports the gap at once (this page's gap timeout is long)
  const first = (seq += 3);
  seq += 256;
  await fake(({ from, topic, first }) => {
    for (let n = 0; n <= 256; n++) {
      const env = { v: 1, seq: first + n, ts: Date.now(), type: 'agent.text', turn: 't9', data: { delta: '.' } };
      window.__fakeLiveKit.textStream({ topic, from, chunks: [JSON.stringify(env)] });
    }
  }, { from: AGENT, topic: TOPIC, first });
  const card = page.locator('.hitl[data-request-id="req-21"]');
  await card.waitFor();
  assert.equal(await card.locator('.prompt').innerText(), 'Refund 7 EUR?');
  assert.equal(await card.getAttribute('data-state'), 'pending');
  assert.equal(await goneCard.getAttribute('data-state'), 'expired');
  assert.equal(await goneCard.locator('.outcome').innerText(), 'No longer open (its outcome did not reach this page).');
  assert.equal(await goneCard.locator('button').count(), 0);
  const calls = await rpcCalls();
  assert.deepEqual(calls.map((c) => [c.method, c.payload.type, c.payload.data]), [['acme.control', 'session.sync', {}]]);
  assert.equal(await page.locator('#errors li', { hasText: 'were lost' }).count(), 1);
});

test('the agent ending the session says why, in the banner', async () => {
  assert.ok(await page.locator('#banner').isHidden());
  await envelope('session.ended', { reason: 'shutdown' });
  assert.ok(await page.locator('#banner').isVisible());
  assert.equal(await text('#banner'), 'The agent is restarting. Connect again to start a new session.');
  assert.equal(await attr('#banner', 'data-ended'), 'shutdown');
});

test('disconnecting resets the page', async () => {
  await fake(() => window.__fakeLiveKit.disconnect());
  assert.equal(await text('#connection'), 'Disconnected');
  assert.equal(await text('#agent-state'), 'Agent: not here');
  assert.equal(await text('#mic'), 'Microphone off');
  assert.ok(await page.locator('#mic').isDisabled());
  assert.equal(await text('#connect'), 'Connect');
});
