// The fake room module must not drift from the pinned livekit-client: every name the page imports
// exists in the real bundle, and the fake's event names / enum values equal the real ones.
// Members the page and the bridge helper call are checked against the bundle's type declarations.

import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as fake from './fake-livekit.mjs';

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST = path.join(WEB, 'node_modules', 'livekit-client', 'dist');
const bundle = readFileSync(path.join(DIST, 'livekit-client.esm.mjs'), 'utf8');
const VENDOR = '/vendor/livekit-client.esm.mjs';

function realExports() {
  const block = bundle.slice(bundle.lastIndexOf('export{') + 'export{'.length);
  return new Set(
    block
      .slice(0, block.indexOf('}'))
      .split(',')
      .map((s) => s.trim().split(/\s+as\s+/).pop()),
  );
}

function pageImports() {
  const names = new Set();
  for (const file of readdirSync(path.join(WEB, 'public')).filter((f) => f.endsWith('.js'))) {
    const source = readFileSync(path.join(WEB, 'public', file), 'utf8');
    for (const m of source.matchAll(/import\s*\{([^}]*)\}\s*from\s*['"]([^'"]+)['"]/g)) {
      if (m[2] === VENDOR) m[1].split(',').forEach((n) => names.add(n.trim().split(/\s+as\s+/)[0]));
    }
  }
  return names;
}

function declarations(relative) {
  return readFileSync(path.join(DIST, 'src', relative), 'utf8');
}

test('names the page imports from livekit-client exist in the real bundle and the fake', () => {
  const used = pageImports();
  assert.ok(used.has('Room') && used.has('RoomEvent'), `page imports: ${[...used]}`);
  const real = realExports();
  for (const name of used) {
    assert.ok(real.has(name), `livekit-client does not export ${name}`);
    assert.ok(name in fake, `fake-livekit.mjs does not export ${name}`);
  }
});

test("the fake's RoomEvent values are livekit-client's", () => {
  for (const [key, value] of Object.entries(fake.RoomEvent)) {
    assert.ok(bundle.includes(`RoomEvent["${key}"] = "${value}"`), `RoomEvent.${key} should be ${value}`);
  }
});

test("the fake's Track and ParticipantKind values are livekit-client's", () => {
  for (const [key, value] of Object.entries(fake.Track.Kind)) {
    assert.ok(bundle.includes(`Kind["${key}"] = "${value}"`), `Track.Kind.${key}`);
  }
  for (const [key, value] of Object.entries(fake.Track.Source)) {
    assert.ok(bundle.includes(`Source["${key}"] = "${value}"`), `Track.Source.${key}`);
  }
  assert.match(bundle, /no: 4,\s*name: "AGENT"/);
  assert.equal(fake.ParticipantKind.AGENT, 4);
});

test('members the page uses are declared by livekit-client', () => {
  const room = declarations('room/Room.d.ts');
  for (const member of ['registerTextStreamHandler(', 'unregisterTextStreamHandler(', 'startAudio:', 'connect:', 'disconnect:', 'remoteParticipants:', 'localParticipant:']) {
    assert.ok(room.includes(member), `Room.${member}`);
  }
  const local = declarations('room/participant/LocalParticipant.d.ts');
  for (const member of ['setMicrophoneEnabled(', 'performRpc(', 'sendText(']) {
    assert.ok(local.includes(member), `LocalParticipant.${member}`);
  }
  const participant = declarations('room/participant/Participant.d.ts');
  for (const member of ['get isAgent()', 'get kind()', 'get attributes()', 'identity:']) {
    assert.ok(participant.includes(member), `Participant.${member}`);
  }
  const reader = declarations('room/data-stream/incoming/StreamReader.d.ts');
  assert.ok(reader.includes('readAll(') && reader.includes('[Symbol.asyncIterator]()'));
});
