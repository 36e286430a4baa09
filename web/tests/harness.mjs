// Shared set-up for the browser tests: the real web server (agent/web.py) in test mode on
// 127.0.0.1, and Debian's Chromium driven by playwright-core (no browser download).

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const TEST_KEY = 'APIbrowsertest';
export const TEST_SECRET = 'browser-test-secret-0123456789-abcdefgh';
export const PUBLIC_URL = 'ws://livekit.invalid:7880';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const PYTHON = process.env.PYTHON || path.join(REPO, '.venv', 'bin', 'python');

/**
 * Start `python -m agent.web [--test-mode] --port 0`; resolves with its base URL and a stop().
 * Without test mode the page gets the real livekit-client from web/node_modules.
 */
export async function startServer({ testMode = true, publicUrl = PUBLIC_URL, env = {} } = {}) {
  const args = ['-m', 'agent.web', '--host', '127.0.0.1', '--port', '0'];
  if (testMode) args.push('--test-mode');
  const child = spawn(PYTHON, args, {
    cwd: REPO,
    env: {
      ...process.env,
      LIVEKIT_API_KEY: TEST_KEY,
      LIVEKIT_API_SECRET: TEST_SECRET,
      LIVEKIT_PUBLIC_URL: publicUrl,
      WEB_TEST_MODE: '',
      AGENT_NAME: 'voice-agent',
      TOKEN_TTL: '600',
      WEB_ROOM_PREFIX: '',
      WEB_TOKENS_PER_MINUTE: '0',
      ROOM_MAX_PARTICIPANTS: '3',
      WEB_ROOT: '',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const base = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/127\.0\.0\.1:\d+)\//);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`web server exited (${code}): ${stderr}`)));
  });
  return {
    base,
    stop: () =>
      new Promise((resolve) => {
        child.removeAllListeners('exit');
        child.once('exit', resolve);
        child.kill('SIGTERM');
      }),
  };
}

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: apt-get install -y chromium (or set CHROMIUM_PATH)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

export function screenshotPath(name) {
  return path.join(mkdtempSync(path.join(tmpdir(), 'voice-web-')), name);
}

/** The payload of a JWT, without verifying it (the Python tests verify signatures). */
export function jwtClaims(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}
