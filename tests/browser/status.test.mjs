// Real-browser test of the status page (status.html, reading GET /api/status):
//   1. it loads, goes live, and shows the daemon (version, addresses, certificate);
//   2. a device that goes online on the intercom page is listed within a second, with its room,
//      its link (ws) and its address; when it leaves, it is gone within a second;
//   3. the counters move after traffic (a chat message passed on; a refused frame by reason);
//   4. hidden, the page reads nothing and holds no event stream; shown again, it is live at once;
//   5. the intercom, room and trust pages link to it.
//
// Run through ./run.sh DAEMON_BINARY (it sets INTERCOMD_BIN and isolates the network).
// SCREENSHOTS=DIR saves status.png (desktop-sized) there.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, startDaemon, stopDaemon, makeExpect, launchBrowser, screenshot, openPage, openIntercom } from './lib.mjs';

describe('status page', { timeout: 120_000 }, () => {
  let workDir;
  let daemon;
  let url;
  let browser;
  const logs = [];
  const pages = {};
  const expect = makeExpect(pages, logs);
  const pageErrors = () => logs.filter((l) => l.includes('PAGE ERROR'));
  const newPage = (name, options = {}) => openPage(browser, name, pages, logs, options);
  const row = (id) => `[data-testid="peer"][data-id="${id}"]`;

  before(async () => {
    assert.ok(BIN, 'set INTERCOMD_BIN to the daemon binary (or use tests/browser/run.sh DAEMON_BINARY)');
    workDir = mkdtempSync(join(tmpdir(), 'intercomd-status-'));
    daemon = startDaemon(workDir);
    url = `http://127.0.0.1:${await daemon.port}/`;
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await browser.close();
    if (daemon) await stopDaemon(daemon.child);
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  it('shows the daemon, its addresses and its certificate', async () => {
    const status = await newPage('status', { viewport: { width: 1100, height: 900 } });
    await expect('status.html did not load', 10_000, (ms) => status.goto(`${url}status.html`, { timeout: ms }));
    await expect('the status page did not go live', 10_000,
      (ms) => status.waitForFunction(() => document.body.dataset.live === 'live', null, { timeout: ms }));
    assert.match(await status.textContent('[data-testid="version"]'), /^\d+\.\d+\.\d+/);
    assert.match(await status.textContent('[data-testid="listen"]'), /^http 127\.0\.0\.1:\d+, https 127\.0\.0\.1:\d+$/);
    const urls = await status.$$eval('[data-testid="urls"] a', (links) => links.map((a) => a.href));
    assert.deepEqual(urls.map((u) => new URL(u).protocol), ['https:', 'http:'], 'the https address first');
    const https = await (await status.request.get(`${url}api/https`)).json();
    assert.equal(await status.textContent('[data-testid="ca-fingerprint"]'), https.caFingerprint);
    assert.match(await status.textContent('[data-testid="cert-names"]'), /localhost/);
    assert.equal(await status.isVisible('[data-testid="nobody"]'), true, 'nobody online yet');
  });

  it('lists a device within a second of it going online, and drops it within a second of it leaving', async () => {
    const status = pages.status;
    const kitchen = await openIntercom(newPage, expect, url, 'kitchen');
    // The moment the intercom page is online, the status page has a second to show it.
    await expect('the status page did not list kitchen', 1_000,
      (ms) => status.waitForSelector(row('kitchen'), { timeout: ms }));
    const cells = await status.$$eval(`${row('kitchen')} td`, (tds) => tds.map((td) => td.textContent));
    assert.deepEqual(cells.slice(0, 5), ['kitchen', 'lobby', 'intercom', 'ws', '127.0.0.1']);
    assert.equal(await status.textContent('[data-testid="online-count"]'), '1');
    assert.equal(await status.isVisible('[data-room="lobby"]'), true, 'the room is listed');

    // "Change name" takes kitchen offline (a clean close, so no reconnect grace).
    await kitchen.click('[data-testid="change-name"]');
    await expect('the status page still listed kitchen', 1_000,
      (ms) => status.waitForSelector(row('kitchen'), { state: 'detached', timeout: ms }));
    assert.equal(await status.isVisible('[data-testid="nobody"]'), true);
    await kitchen.close();
  });

  it('counts traffic: a message passed on, a frame refused by reason', async () => {
    const status = pages.status;
    const number = async (testid) => Number((await status.textContent(`[data-testid="${testid}"]`)).replace(/\D/g, ''));
    const routed = await number('messages-routed');
    // Two devices of the page's own origin, talking through the daemon.
    const traffic = await newPage('traffic');
    await traffic.goto(`${url}healthz`);
    await traffic.evaluate(async () => {
      const open = (id) => new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://${location.host}/ws?id=${id}`);
        ws.onmessage = (event) => { if (JSON.parse(event.data).type === 'welcome') resolve(ws); };
        ws.onerror = () => reject(new Error(`${id} could not connect`));
      });
      const [hall, porch] = [await open('hall'), await open('porch')];
      const heard = new Promise((resolve) => {
        porch.onmessage = (event) => { if (JSON.parse(event.data).type === 'chat') resolve(); };
      });
      hall.send(JSON.stringify({ type: 'chat', to: 'porch', text: 'hello' }));
      await heard;
      const refused = new Promise((resolve) => {
        hall.onmessage = (event) => { if (JSON.parse(event.data).type === 'error') resolve(); };
      });
      hall.send(JSON.stringify({ type: 'chat', to: 'nobody-here', text: 'hello' }));
      await refused;
    });
    await expect('the status page did not count the message passed on', 5_000, (ms) => status.waitForFunction(
      (before) => Number(document.querySelector('[data-testid="messages-routed"]').textContent.replace(/\D/g, '')) > before,
      routed, { timeout: ms }));
    await expect('the status page did not count the refused message by its reason', 5_000,
      (ms) => status.waitForSelector('[data-testid="refused-unknown-peer"]', { timeout: ms }));
    assert.equal(await status.textContent('[data-testid="refused-unknown-peer"]'), '1');
    assert.ok(await number('messages-refused') >= 1);
    await screenshot(status, 'status.png');
    await traffic.close();
  });

  it('reads nothing while hidden, and is live again at once when shown', async () => {
    const status = pages.status;
    const requests = [];
    status.on('request', (request) => requests.push(request.url()));
    // Hidden: emulate what a background tab sees.
    await status.evaluate(() => {
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
      document.dispatchEvent(new Event('visibilitychange'));
    });
    assert.equal(await status.evaluate(() => document.body.dataset.live), 'paused');
    const seen = requests.length;
    assert.equal(await status.evaluate(() => source), null, 'a hidden status page holds no event stream');
    // Two poll periods with nothing read: proving an absence takes a stretch of time.
    await status.waitForTimeout(4_500);
    assert.deepEqual(requests.slice(seen), [], 'a hidden status page reads nothing');
    await status.evaluate(() => {
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'visible' });
      document.dispatchEvent(new Event('visibilitychange'));
    });
    await expect('the status page did not come back live', 2_000,
      (ms) => status.waitForFunction(() => document.body.dataset.live === 'live', null, { timeout: ms }));
  });

  it('is linked from the intercom, room and trust pages', async () => {
    const page = await newPage('links');
    for (const path of ['', 'room.html?room=lobby', 'trust.html']) {
      await page.goto(`${url}${path}`);
      assert.equal(await page.getAttribute('[data-testid="status-link"]', 'href'), 'status.html', `${path || 'index'}`);
    }
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });
});
