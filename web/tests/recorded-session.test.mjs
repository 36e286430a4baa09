// Replays the envelopes of a session recorded from the Python bridge
// (bridge/client/fixtures/example-session.jsonl) into the page, in a real browser, so the page is
// checked against what the agent actually sends, not only against hand-written envelopes.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { REPO, launchBrowser, startServer } from './harness.mjs';

const FIXTURE = path.join(REPO, 'bridge', 'client', 'fixtures', 'example-session.jsonl');
const AGENT = 'agent-recorded';

let server;
let browser;
let page;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  page = await browser.newPage();
  page.on('pageerror', (err) => {
    throw err;
  });
  await page.goto(`${server.base}/?room=room-42`);
  await page.click('#connect');
  await page.locator('#connection[data-state="connected"]').waitFor();
  await page.evaluate((id) => window.__fakeLiveKit.addParticipant(id, { agent: true, attributes: { 'lk.agent.state': 'listening' } }), AGENT);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('a recorded bridge session renders tools, the approval outcome and latency', async () => {
  const outbound = readFileSync(FIXTURE, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line))
    .filter((entry) => entry.dir === 'out')
    .map((entry) => entry.msg);
  assert.ok(outbound.length > 10);
  for (const env of outbound) {
    await page.evaluate(
      ({ env, from }) => window.__fakeLiveKit.textStream({ topic: 'voice-agent.events', from, chunks: [JSON.stringify(env)] }),
      { env, from: AGENT },
    );
  }

  const started = outbound.find((e) => e.type === 'tool.started').data;
  const tool = page.locator(`.tool[data-call-id="${started.call_id}"]`);
  assert.equal(await tool.locator('.name').innerText(), started.tool);
  assert.equal(await tool.getAttribute('data-state'), 'ok');
  assert.deepEqual(JSON.parse(await tool.locator('.args').innerText()), started.arguments);

  const request = outbound.find((e) => e.type === 'hitl.request').data;
  const resolved = outbound.find((e) => e.type === 'hitl.resolved').data;
  const card = page.locator(`.hitl[data-request-id="${request.request_id}"]`);
  assert.equal(await card.locator('.prompt').innerText(), request.prompt);
  assert.equal(await card.getAttribute('data-state'), resolved.outcome);
  assert.equal(await card.locator('.outcome').innerText(), `Approved by ${resolved.by} (with changed arguments)`);
  assert.equal(await card.locator('button').count(), 0);

  const metrics = outbound.find((e) => e.type === 'metrics');
  const row = page.locator(`#latency tr[data-turn="${metrics.turn}"]`);
  for (const [name, value] of Object.entries(metrics.data)) {
    const label = name.replace(/_ms$/, '').replace(/_/g, ' ');
    const metric = row.locator(`[data-metric="${name}"]`);
    if (typeof value === 'boolean') {  // a flag: shown by name when true, absent when false
      if (value) assert.equal(await metric.innerText(), label);
      else assert.equal(await metric.count(), 0);
      continue;
    }
    assert.equal(await metric.innerText(), `${label} ${value} ms`);
  }

  // nothing was lost or rejected by the helper on the way
  assert.equal(await page.locator('#errors li[data-code]').count(), 0);
  // the page's transcript comes from lk.transcription, not from the bridge's text events
  assert.equal(await page.locator('#transcript .line').count(), 0);
});
