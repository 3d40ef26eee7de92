// Real-browser test of the installable app (manifest.webmanifest, sw.js, pwa.js) on the https
// origin, in a Chromium that trusts the daemon's CA (as in https.test.mjs):
//   1. DevTools reports the page installable (Page.getInstallabilityErrors: none), the manifest
//      parsed without errors, and the service worker activated with the shell in its cache;
//      sw.js is served as JavaScript that browsers revalidate;
//   2. with the daemon stopped, a reload comes from the service worker's cache, the page says
//      it cannot reach the intercom, and live endpoints are not answered from any cache; once
//      the daemon is back on the same ports the page goes back online by itself;
//   3. a ring that arrives while the page is hidden shows a system notification through the
//      service worker's registration, which closes when the caller gives up.
// The profile is a persistent one: in an incognito context (what browser.newContext() makes)
// Chromium never offers to install an app.
//
// Run through ./run.sh DAEMON_BINARY (it sets INTERCOMD_BIN, installs certutil and isolates the
// network). The environment it reads is described in lib.mjs.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BIN, LOCAL_HOST, PHONE_VIEWPORT, homeTrusting, startDaemon, stopDaemon, makeExpect, launchBrowser, launchPersistent,
  openIntercom, openPage, poll, screenshot,
} from './lib.mjs';

describe('the installable app', { timeout: 180_000 }, () => {
  const dirs = [];
  let workDir;
  let daemon;
  let port;
  let httpsPort;
  let app;     // the persistent Chromium context that trusts the CA: alice's phone
  let other;   // a second Chromium for the caller
  const logs = [];
  const pages = {};
  const expect = makeExpect(pages, logs);
  const pageErrors = () => logs.filter((l) => l.includes('PAGE ERROR'));
  const origin = () => `https://${LOCAL_HOST}:${httpsPort}`;
  const tempDir = (prefix) => { const d = mkdtempSync(join(tmpdir(), prefix)); dirs.push(d); return d; };

  before(async () => {
    assert.ok(BIN, 'set INTERCOMD_BIN to the daemon binary (or use tests/browser/run.sh DAEMON_BINARY)');
    workDir = tempDir('intercomd-browser-');
    daemon = startDaemon(workDir);
    port = await daemon.port;
    httpsPort = await daemon.httpsPort;
    const home = homeTrusting(join(workDir, 'state', 'ca.crt'));
    dirs.push(home);
    app = await launchPersistent(tempDir('intercomd-profile-'), { env: { ...process.env, HOME: home } });
    app.setDefaultTimeout(10_000);
    other = await launchBrowser();
  });

  after(async () => {
    if (app) await app.close();
    if (other) await other.close();
    if (daemon) await stopDaemon(daemon.child);
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /** alice's page in the persistent profile, with its console in `logs`. */
  async function alicePage() {
    if (pages.alice) return pages.alice;
    const page = app.pages()[0] || await app.newPage();
    await page.setViewportSize(PHONE_VIEWPORT);
    page.on('console', (m) => logs.push(`alice console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => logs.push(`alice PAGE ERROR: ${e.message}`));
    pages.alice = page;
    return page;
  }

  it('Chromium finds the https origin installable, with its service worker activated', async () => {
    const page = await alicePage();
    await expect(`${origin()}/ did not load`, 15_000, (ms) => page.goto(`${origin()}/?room=lobby`, { timeout: ms }));
    const state = await expect('the service worker did not become active and "activated"', 10_000,
      (ms) => page.evaluate((limit) => new Promise((resolve, reject) => {
        setTimeout(() => reject(new Error('navigator.serviceWorker.ready did not settle')), limit);
        navigator.serviceWorker.ready.then((reg) => {
          const worker = reg.active;
          if (worker.state === 'activated') resolve(worker.state);
          worker.addEventListener('statechange', () => { if (worker.state === 'activated') resolve(worker.state); });
        });
      }), ms));
    assert.equal(state, 'activated');

    const cdp = await app.newCDPSession(page);
    const manifest = await cdp.send('Page.getAppManifest');
    assert.equal(manifest.url, `${origin()}/manifest.webmanifest`, 'the page should link the manifest');
    assert.deepEqual(manifest.errors, [], 'the manifest should parse without errors');
    assert.match(manifest.data, /"display":\s*"standalone"/, 'the manifest should ask for a standalone window');
    const { installabilityErrors } = await cdp.send('Page.getInstallabilityErrors');
    assert.deepEqual(installabilityErrors, [], 'Chromium should find nothing that keeps it from offering to install');
    await cdp.detach();

    const shell = await page.evaluate(async () => {
      const names = await caches.keys();
      const cache = await caches.open(names.find((n) => n.startsWith('intercom-shell-')) || 'none');
      const keys = (await cache.keys()).map((r) => new URL(r.url).pathname);
      const sw = await fetch('sw.js', { cache: 'no-store' });
      return {
        names, keys, type: sw.headers.get('content-type'), caching: sw.headers.get('cache-control'),
        version: /const VERSION = '([^']*)'/.exec(await sw.text())?.[1],
      };
    });
    assert.equal(shell.names.length, 1, `one shell cache, not ${JSON.stringify(shell.names)}`);
    // Served from --www (INTERCOMD_WWW) sw.js is the source, with build.rs's placeholder.
    const version = process.env.INTERCOMD_WWW ? /^intercom-shell-__SHELL_VERSION__$/ : /^intercom-shell-[0-9a-f]{16}$/;
    assert.match(shell.names[0], version, 'the cache name should carry the build\'s hash of the pages');
    assert.equal(shell.names[0], `intercom-shell-${shell.version}`, 'sw.js names its cache with the version build.rs wrote into it');
    for (const name of ['/index.html', '/app.js', '/pwa.js', '/style.css', '/manifest.webmanifest', '/icon-192.png']) {
      assert.ok(shell.keys.includes(name), `the shell cache should hold ${name}; it holds ${shell.keys.join(' ')}`);
    }
    assert.ok(!shell.keys.some((k) => /^\/(api|ws|snapshots|healthz|metrics|peerjs)/.test(k)), 'no live endpoint in the cache');
    assert.match(shell.type, /^text\/javascript/, 'sw.js should be served as JavaScript');
    assert.equal(shell.caching, 'no-cache', 'sw.js should be revalidated, so that an upgrade is picked up');
    // Permission is still "default": the offer to notify is shown, and nothing asked on load.
    assert.equal(await page.isVisible('[data-testid="notify-rings"]'), true, 'the "Notify me of rings" button should show');
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the page');
  });

  it('with the daemon stopped the app opens from the cache, says so, and reconnects by itself', async () => {
    const page = await alicePage();
    await expect(`${origin()}/ did not load`, 15_000, (ms) => page.goto(`${origin()}/?room=lobby`, { timeout: ms }));
    await page.fill('#name-input', 'alice');
    await page.click('#connect-btn');
    await expect('alice did not get online', 10_000, (ms) => page.waitForFunction(
      () => document.body.dataset.conn === 'connected' && navigator.serviceWorker.controller !== null, null, { timeout: ms }));
    assert.equal(await page.isVisible('[data-testid="offline"]'), false, 'no offline message while online');

    await stopDaemon(daemon.child);
    const response = await expect('the page did not reload with the daemon stopped', 10_000,
      (ms) => page.reload({ timeout: ms }));
    assert.ok(response && response.fromServiceWorker(), 'the reloaded page should come from the service worker');
    const text = await expect('the page did not say that the intercom cannot be reached', 10_000,
      (ms) => page.waitForSelector('[data-testid="offline"]:visible', { timeout: ms }).then((e) => e.textContent()));
    assert.equal(text, `Can't reach the intercom (${LOCAL_HOST}:${httpsPort}). Retrying…`);
    assert.equal(await page.isVisible('#name-input') || await page.isVisible('#online'), true, 'the app shell should be there');
    await screenshot(page, 'pwa-offline.png');
    // Live endpoints are left to the network, which is down: no cached answer.
    const live = await page.evaluate(() => Promise.all(['healthz', 'api/ice-servers', 'sw.js?x'].map((p) =>
      fetch(p, { cache: 'no-store' }).then((r) => `${p} ${r.status}`, () => `${p} failed`))));
    assert.deepEqual(live, ['healthz failed', 'api/ice-servers failed', 'sw.js?x failed']);

    daemon = startDaemon(workDir, port, ['--https-listen', `127.0.0.1:${httpsPort}`]);
    assert.equal(await daemon.httpsPort, httpsPort, 'the daemon should come back on the same https port');
    await expect('the page did not go back online by itself once the daemon was back', 40_000,
      (ms) => page.waitForFunction(() => document.body.dataset.conn === 'connected' && window.intercom.id === 'alice' &&
        document.querySelector('[data-testid="offline"]').hidden, null, { timeout: ms }));
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the page');
  });

  it('a ring while the page is hidden shows a notification, closed when the caller gives up', async () => {
    const alice = await alicePage();
    await app.grantPermissions(['notifications'], { origin: origin() });
    assert.equal(await alice.evaluate(() => document.body.dataset.ringNotified), undefined, 'no ring yet');
    await expect('alice was not online', 10_000, (ms) => alice.waitForFunction(
      () => document.body.dataset.conn === 'connected', null, { timeout: ms }));
    assert.equal(await alice.evaluate(() => Notification.permission), 'granted');
    // Headless Chromium keeps every page "visible": a minimized window (Browser.setWindowBounds)
    // or another tab in front (Target.createTarget) does not change it. So the page is told it is
    // hidden the way a browser tells it: document.visibilityState, then a visibilitychange event.
    await alice.evaluate(() => {
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
      document.dispatchEvent(new Event('visibilitychange'));
    });

    const bob = await openIntercom((name, o) => openPage(other, name, pages, logs, o), expect,
      `http://127.0.0.1:${port}/`, 'bob');
    await expect('bob could not call alice', 10_000,
      (ms) => bob.waitForSelector('[data-testid="call-audio-alice"]:not([disabled])', { timeout: ms }));
    // The notifications of alice's service worker registration, as the page's script sees them.
    const notifications = () => alice.evaluate(async () => {
      const reg = await navigator.serviceWorker.ready;
      const call = window.intercom.currentCall;
      return (await reg.getNotifications()).map((n) => ({
        title: n.title, tag: n.tag, body: n.body, sticky: n.requireInteraction, call: call && call.id,
      }));
    });
    await bob.click('[data-testid="call-audio-alice"]');
    await expect('alice\'s page did not ring', 10_000, (ms) => alice.waitForFunction(
      () => document.body.dataset.state === 'ringing', null, { timeout: ms }));
    // Only once showNotification has resolved (the page says so): Chromium's getNotifications()
    // drops what it does not see displayed yet, so an earlier read could lose it (seen under load).
    await expect('alice\'s hidden page did not show a ring notification (body[data-ring-notified])', 10_000,
      (ms) => alice.waitForFunction(() => !!document.body.dataset.ringNotified, null, { timeout: ms }));
    const shown = await expect('the ring notification was not listed by getNotifications()', 10_000,
      (ms) => poll(notifications, (list) => list.length > 0, ms, (list) => `notifications: ${JSON.stringify(list)}`))
      .then((list) => list[0]);
    assert.equal(shown.title, 'bob is calling');
    assert.equal(shown.tag, `ring-${shown.call}`, 'one tag per call');
    assert.equal(shown.sticky, true, 'the notification should stay until it is dealt with (requireInteraction)');
    assert.match(shown.body, /Audio call/);

    await bob.click('#cancel-btn');
    await expect('alice\'s page did not stop ringing when bob cancelled', 10_000, (ms) => alice.waitForFunction(
      () => document.body.dataset.state === 'idle', null, { timeout: ms }));
    await expect('the ring notification was not closed when the ring ended', 10_000,
      (ms) => poll(notifications, (list) => list.length === 0, ms, (list) => `still shown: ${JSON.stringify(list)}`));
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });
});
