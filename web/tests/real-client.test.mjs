// The page with the real, locally served livekit-client (no CDN, no fake): the bundle loads in
// Chromium, and a LiveKit server that cannot be reached is reported to the person, not swallowed.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, startServer } from './harness.mjs';

let server;
let browser;

before(async () => {
  // port 9 (discard) on loopback: nothing listens, so the WebSocket is refused at once
  server = await startServer({ testMode: false, publicUrl: 'ws://127.0.0.1:9' });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the real livekit-client loads from /vendor and a refused connection is shown', async () => {
  const page = await browser.newPage();
  const errors = [];
  const requests = [];
  page.on('pageerror', (err) => errors.push(err));
  page.on('request', (req) => requests.push(new URL(req.url())));
  await page.goto(`${server.base}/`);

  assert.equal(await page.locator('#connection').innerText(), 'Disconnected');
  assert.match(await page.inputValue('#room'), /^web-[a-z2-7]{16}$/);
  const hasRoom = await page.evaluate(async () => typeof (await import('/vendor/livekit-client.esm.mjs')).Room === 'function');
  assert.ok(hasRoom, 'livekit-client exports Room');

  await page.click('#connect');
  await page.locator('#banner:not([hidden])').waitFor({ timeout: 60_000 });
  assert.match(await page.locator('#banner').innerText(), /^Could not connect: /);
  assert.equal(await page.locator('#connection').innerText(), 'Disconnected');
  assert.deepEqual(errors, []);

  // besides the LiveKit server itself (livekit-client probes it over HTTP after a failed
  // WebSocket), everything comes from this server: no CDN at run time
  const http = requests.filter((u) => u.protocol.startsWith('http') && u.host !== '127.0.0.1:9');
  assert.ok(http.every((u) => u.origin === server.base), `only same-origin HTTP: ${http.map(String)}`);
  assert.ok(http.some((u) => u.pathname === '/vendor/livekit-client.esm.mjs'));
});
