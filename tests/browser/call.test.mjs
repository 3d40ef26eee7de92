// Real-browser test of the intercom page: two headless Chromium pages call each other
// through intercomd, talk (fake microphone), chat over the data channel and hang up.
//
// Run through ./run.sh DAEMON_BINARY (it sets INTERCOMD_BIN and isolates the network).
// The environment it reads is described in lib.mjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, startDaemon, stopDaemon, makeExpect, waitAudioAbove, launchBrowser } from './lib.mjs';

test('two pages call each other: audio both ways, chat, hang up', { timeout: 120_000 }, async (t) => {
  assert.ok(BIN, 'set INTERCOMD_BIN to the daemon binary (or use tests/browser/run.sh DAEMON_BINARY)');
  const started = Date.now();
  const workDir = mkdtempSync(join(tmpdir(), 'intercomd-browser-'));
  t.after(() => rmSync(workDir, { recursive: true, force: true }));

  const daemon = startDaemon(workDir);
  t.after(() => stopDaemon(daemon.child));
  const port = await daemon.port;
  const url = `http://127.0.0.1:${port}/`;

  // launch() gives Chromium a fresh temporary user-data dir of its own and removes it on close.
  const browser = await launchBrowser();
  t.after(() => browser.close());
  const launched = Date.now();

  const logs = [];
  const pages = {};
  for (const name of ['alice', 'bob']) {
    const ctx = await browser.newContext(); // separate storage: separate tokens
    const page = await ctx.newPage();
    page.on('console', (m) => logs.push(`${name} console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => logs.push(`${name} PAGE ERROR: ${e.message}`));
    pages[name] = page;
  }
  const { alice, bob } = pages;
  const expect = makeExpect(pages, logs);
  const pageErrors = () => logs.filter((l) => l.includes('PAGE ERROR'));

  // Both go online.
  for (const [name, page] of Object.entries(pages)) {
    await expect(`${name}'s page did not load from ${url}`, 10_000, (ms) => page.goto(url, { timeout: ms }));
    await page.fill('#name-input', name);
    await page.click('#connect-btn');
    await expect(`${name} did not get online (welcome) as "${name}"`, 10_000,
      (ms) => page.waitForFunction((n) => document.body.dataset.conn === 'connected' && window.intercom.id === n,
        name, { timeout: ms }));
  }
  await expect('alice never saw bob online', 10_000,
    (ms) => alice.waitForSelector('[data-testid="peer-bob"]', { timeout: ms }));
  await expect('bob never saw alice online', 10_000,
    (ms) => bob.waitForSelector('[data-testid="peer-alice"]', { timeout: ms }));

  // alice calls bob (audio) with the page's button; bob's page rings; bob accepts.
  await alice.click('[data-testid="call-audio-bob"]');
  await expect('alice\'s page did not go to "calling" after clicking Call (audio)', 5_000,
    (ms) => alice.waitForFunction(() => ['calling', 'in-call'].includes(document.body.dataset.state), null, { timeout: ms }));
  await expect('bob\'s page did not ring (state "ringing") after alice called', 10_000,
    (ms) => bob.waitForFunction(() => document.body.dataset.state === 'ringing', null, { timeout: ms }));
  assert.equal((await bob.textContent('#incoming-from')).trim(), 'alice', 'the ringing card on bob\'s page should name alice');
  await bob.click('#accept-btn');
  for (const [name, page] of Object.entries(pages)) {
    await expect(`${name}'s page did not reach "in-call" after bob accepted`, 10_000,
      (ms) => page.waitForFunction(() => document.body.dataset.state === 'in-call' && window.intercom.pc, null, { timeout: ms }));
  }
  for (const [name, page] of Object.entries(pages)) {
    await expect(`${name}'s ICE connection did not reach connected/completed`, 15_000,
      (ms) => page.waitForFunction(
        () => ['connected', 'completed'].includes(window.intercom.pc && window.intercom.pc.iceConnectionState),
        null, { timeout: ms }));
  }

  // Audio flows both ways: inbound audio bytes grow on both sides (sampled twice).
  for (const [name, page] of Object.entries(pages)) {
    const first = await expect(`${name} received no audio bytes`, 10_000, (ms) => waitAudioAbove(page, 0, ms));
    const second = await expect(`${name}'s received audio bytes did not grow beyond ${first}`, 10_000,
      (ms) => waitAudioAbove(page, first, ms));
    assert.ok(second > first, `${name}: inbound audio bytes should grow (${first} -> ${second})`);
  }

  // Chat over the data channel, one message each way.
  for (const [name, page] of Object.entries(pages)) {
    await expect(`${name}'s chat (data channel) did not open`, 10_000,
      (ms) => page.waitForFunction(() => window.intercom.dc && window.intercom.dc.readyState === 'open' &&
        !document.getElementById('chat-send').disabled, null, { timeout: ms }));
  }
  const chats = [[alice, bob, 'alice', 'bob', 'hello bob, from alice'], [bob, alice, 'bob', 'alice', 'hi alice, bob here']];
  for (const [from, to, fromName, toName, text] of chats) {
    await from.fill('#chat-input', text);
    await from.click('#chat-send');
    await expect(`${toName} did not see ${fromName}'s chat message "${text}"`, 5_000,
      (ms) => to.waitForFunction((t) => document.getElementById('chat-log').textContent.includes(t), text, { timeout: ms }));
    await expect(`${fromName} did not see its own chat message in its log`, 2_000,
      (ms) => from.waitForFunction((t) => document.getElementById('chat-log').textContent.includes(t), text, { timeout: ms }));
  }

  // bob hangs up; both pages return to idle, ready for the next call.
  await bob.click('#hangup-btn');
  for (const [name, page] of Object.entries(pages)) {
    await expect(`${name}'s page did not return to "idle" after bob hung up`, 10_000,
      (ms) => page.waitForFunction(() => document.body.dataset.state === 'idle' && window.intercom.pc === null,
        null, { timeout: ms }));
  }
  await expect('alice\'s Call buttons for bob were not enabled again after the call', 5_000,
    (ms) => alice.waitForSelector('[data-testid="call-audio-bob"]:not([disabled])', { timeout: ms }));
  await expect('bob\'s Call buttons for alice were not enabled again after the call', 5_000,
    (ms) => bob.waitForSelector('[data-testid="call-audio-alice"]:not([disabled])', { timeout: ms }));

  assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  t.diagnostic(`browser launch ${((launched - started) / 1000).toFixed(1)} s, ` +
    `call test ${((Date.now() - launched) / 1000).toFixed(1)} s after launch`);
});
