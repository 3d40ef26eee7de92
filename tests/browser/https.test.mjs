// Real-browser test of the daemon's HTTPS listener and its local certificate authority (CA):
//   1. Chromium made to trust the CA the way Chromium on a Linux desktop does (an NSS database in
//      $HOME/.pki/nssdb, filled by certutil) opens https://<host name>.local:PORT/ with no
//      certificate error, as a secure context whose getUserMedia gives a live microphone track;
//   2. two pages on that https origin go online over wss and make an audio call, audio both ways;
//   3. a Chromium without that database gets a certificate error on the same address (so 1 would
//      fail if the daemon's certificate or the trust did not hold);
//   4. over plain http the page is not a secure context, says so and links to the https address
//      (the daemon's real port) and to trust.html, which shows the CA's fingerprint and downloads
//      exactly state/ca.crt (as DER); trust.png is its screenshot on a phone-sized screen;
//   5. a daemon started with --no-https: the pages say there is no HTTPS listener.
// <host name>.local is the name the daemon's certificate holds for this machine; Chromium's
// --host-resolver-rules (lib.mjs) sends it to 127.0.0.1.
//
// Run through ./run.sh DAEMON_BINARY (it sets INTERCOMD_BIN, installs certutil and isolates the
// network). The environment it reads is described in lib.mjs.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BIN, LOCAL_HOST, homeTrusting, startDaemon, stopDaemon, makeExpect, waitAudioAbove, launchBrowser, screenshot, openPage,
} from './lib.mjs';

// A phone: narrow, and an Android user agent, so that trust.html opens the Android steps first.
const PHONE = {
  viewport: { width: 390, height: 844 },
  userAgent: 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) ' +
    'Chrome/126.0.0.0 Mobile Safari/537.36',
};

describe('https with the local certificate authority', { timeout: 180_000 }, () => {
  const dirs = [];
  let workDir;
  let daemon;
  let port;
  let httpsPort;
  let caPem;
  let trusting;   // Chromium whose NSS database trusts the daemon's CA
  let untrusting; // Chromium with an empty HOME
  let launched;
  const logs = [];
  const pages = {};
  const expect = makeExpect(pages, logs);
  const pageErrors = () => logs.filter((l) => l.includes('PAGE ERROR'));
  const others = { alice: 'bob', bob: 'alice' };
  const secureUrl = () => `https://${LOCAL_HOST}:${httpsPort}/`;

  before(async () => {
    assert.ok(BIN, 'set INTERCOMD_BIN to the daemon binary (or use tests/browser/run.sh DAEMON_BINARY)');
    workDir = mkdtempSync(join(tmpdir(), 'intercomd-browser-'));
    dirs.push(workDir);
    daemon = startDaemon(workDir);
    port = await daemon.port;
    httpsPort = await daemon.httpsPort;
    const caFile = join(workDir, 'state', 'ca.crt');
    caPem = readFileSync(caFile, 'utf8');
    const home = homeTrusting(caFile);
    dirs.push(home);
    trusting = await launchBrowser({ env: { ...process.env, HOME: home } });
    const emptyHome = mkdtempSync(join(tmpdir(), 'intercomd-home-'));
    dirs.push(emptyHome);
    untrusting = await launchBrowser({ env: { ...process.env, HOME: emptyHome } });
    launched = Date.now();
  });

  after(async () => {
    if (trusting) await trusting.close();
    if (untrusting) await untrusting.close();
    if (daemon) await stopDaemon(daemon.child);
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  const newPage = (name, browser = trusting, options = {}) => openPage(browser, name, pages, logs, options);

  async function closePage(name) {
    await pages[name].context().close();
    delete pages[name];
  }

  it('a browser that trusts the CA opens the https address as a secure context with a live microphone', async () => {
    const page = await newPage('probe');
    const response = await expect(`${secureUrl()} did not load in the browser that trusts the CA ` +
      '(certificate not trusted, or not for this name?)', 15_000, (ms) => page.goto(secureUrl(), { timeout: ms }));
    assert.equal(response.status(), 200, `${secureUrl()} should answer 200`);
    const tls = await response.securityDetails();
    assert.ok(tls, 'the page should have come over TLS');
    assert.match(tls.issuer, /intercomd local CA/, 'the certificate should be issued by the daemon\'s own CA');
    assert.equal(await page.evaluate(() => window.isSecureContext), true, `${secureUrl()} should be a secure context`);
    assert.equal(await page.isVisible('#secure-warning'), false, 'a secure page shows no insecure-context warning');

    const track = await expect('getUserMedia({audio: true}) did not give an audio track on the https page', 10_000,
      (ms) => page.evaluate(async (limit) => {
        const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('getUserMedia did not answer')), limit));
        const stream = await Promise.race([navigator.mediaDevices.getUserMedia({ audio: true }), timeout]);
        const t = stream.getAudioTracks()[0];
        const out = t ? { kind: t.kind, readyState: t.readyState, label: t.label } : null;
        for (const x of stream.getTracks()) x.stop();
        return out;
      }, ms));
    assert.ok(track, 'the stream should hold an audio track');
    assert.equal(track.readyState, 'live', `the microphone track should be live (${JSON.stringify(track)})`);
    await closePage('probe');
  });

  it('two pages on the https origin go online over wss and make an audio call, audio both ways', async () => {
    const sockets = [];
    for (const name of Object.keys(others)) {
      const page = await newPage(name);
      page.on('websocket', (ws) => sockets.push(`${name} ${ws.url()}`));
      await expect(`${name}'s page did not load from ${secureUrl()}`, 15_000, (ms) => page.goto(secureUrl(), { timeout: ms }));
      await page.fill('#name-input', name);
      await page.click('#connect-btn');
      await expect(`${name} did not get online (welcome) over wss as "${name}"`, 10_000,
        (ms) => page.waitForFunction((n) => document.body.dataset.conn === 'connected' && window.intercom.id === n,
          name, { timeout: ms }));
    }
    for (const name of Object.keys(others)) {
      assert.ok(sockets.some((s) => s.startsWith(`${name} wss://${LOCAL_HOST}:${httpsPort}/ws?`)),
        `${name}'s signaling socket should be wss on the https origin; sockets: ${sockets.join(', ')}`);
    }

    const { alice, bob } = pages;
    await expect('alice\'s Call (audio) button for bob was not enabled', 10_000,
      (ms) => alice.waitForSelector('[data-testid="call-audio-bob"]:not([disabled])', { timeout: ms }));
    await alice.click('[data-testid="call-audio-bob"]');
    await expect('bob\'s page did not ring (state "ringing") after alice called', 10_000,
      (ms) => bob.waitForFunction(() => document.body.dataset.state === 'ringing', null, { timeout: ms }));
    await bob.click('#accept-btn');
    for (const name of Object.keys(others)) {
      await expect(`${name}'s ICE connection did not reach connected/completed in the https call`, 15_000,
        (ms) => pages[name].waitForFunction(() => document.body.dataset.state === 'in-call' &&
          ['connected', 'completed'].includes(window.intercom.pc && window.intercom.pc.iceConnectionState),
        null, { timeout: ms }));
    }
    for (const name of Object.keys(others)) {
      const first = await expect(`${name} received no audio bytes in the https call`, 10_000,
        (ms) => waitAudioAbove(pages[name], 0, ms));
      const second = await expect(`${name}'s received audio bytes did not grow beyond ${first} in the https call`, 10_000,
        (ms) => waitAudioAbove(pages[name], first, ms));
      assert.ok(second > first);
    }
    await bob.click('#hangup-btn');
    for (const name of Object.keys(others)) {
      await expect(`${name}'s page was not back to "idle" after bob hung up`, 10_000,
        (ms) => pages[name].waitForFunction(() => document.body.dataset.state === 'idle' && window.intercom.pc === null,
          null, { timeout: ms }));
    }
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
    for (const name of Object.keys(others)) await closePage(name);
  });

  it('a browser that does not trust the CA gets a certificate error on the same address', async () => {
    const page = await newPage('untrusting', untrusting);
    const error = await expect(`navigating the untrusting browser to ${secureUrl()} did not end`, 15_000,
      (ms) => page.goto(secureUrl(), { timeout: ms }).then(() => null, (e) => e));
    assert.ok(error, `a browser without the CA loaded ${secureUrl()}: the trusted case above would prove nothing`);
    assert.match(error.message, /net::ERR_CERT_[A-Z_]+/,
      `the navigation should fail with a certificate error, not: ${error.message.split('\n')[0]}`);
    await closePage('untrusting');
  });

  it('over plain http the page links to the https address and to trust.html, which gives the CA', async () => {
    const base = `http://${LOCAL_HOST}:${port}`;
    const page = await newPage('phone', trusting, PHONE);
    await expect(`the page did not load from ${base}/`, 10_000, (ms) => page.goto(`${base}/`, { timeout: ms }));
    assert.equal(await page.evaluate(() => window.isSecureContext), false, `${base}/ should not be a secure context`);
    await expect('the intercom page did not show the insecure-context message', 5_000,
      (ms) => page.waitForSelector('#secure-warning:not([hidden])', { timeout: ms }));
    assert.match(await page.textContent('#secure-warning'), new RegExp(`https://${LOCAL_HOST}:${httpsPort}/`),
      'the message should name the https address with the daemon\'s real port');
    assert.equal(await page.getAttribute('[data-testid="https-link"]', 'href'), secureUrl(),
      'the message should link to the https address on the daemon\'s real https port');
    assert.equal(await page.getAttribute('[data-testid="trust-link"]', 'href'), 'trust.html',
      'the message should link to trust.html');

    // The room page keeps its path and query in the link; the door page shows the links in its notice.
    const roomPath = '/room.html?room=family';
    await expect(`${base}${roomPath} did not load`, 10_000, (ms) => page.goto(`${base}${roomPath}`, { timeout: ms }));
    await expect('the room page did not show its https link', 5_000,
      (ms) => page.waitForSelector('#secure-warning:not([hidden]) [data-testid="https-link"]', { timeout: ms }));
    assert.equal(await page.getAttribute('[data-testid="https-link"]', 'href'),
      `https://${LOCAL_HOST}:${httpsPort}${roomPath}`, 'the room page should link to its own https address');
    const doorPath = '/door.html?id=gate&room=lobby&call=*';
    await expect(`${base}${doorPath} did not load`, 10_000, (ms) => page.goto(`${base}${doorPath}`, { timeout: ms }));
    await expect('the door page did not show the https and trust links in its insecure notice', 5_000,
      (ms) => page.waitForSelector('[data-testid="notice-insecure"] [data-testid="trust-link"]', { timeout: ms }));
    assert.equal(await page.getAttribute('[data-testid="notice-insecure"] [data-testid="https-link"]', 'href'),
      `https://${LOCAL_HOST}:${httpsPort}${doorPath}`, 'the door page should link to its own https address');

    // trust.html, reached by its link.
    await expect(`${base}/ did not load again`, 10_000, (ms) => page.goto(`${base}/`, { timeout: ms }));
    await expect('the trust link did not appear', 5_000,
      (ms) => page.waitForSelector('[data-testid="trust-link"]', { timeout: ms }));
    await page.click('[data-testid="trust-link"]');
    await expect('trust.html did not load from the trust link', 10_000,
      (ms) => page.waitForURL(`${base}/trust.html`, { timeout: ms }));
    await expect('trust.html did not show the CA (body data-ca="ca")', 5_000,
      (ms) => page.waitForFunction(() => document.body.dataset.ca === 'ca', null, { timeout: ms }));

    // Through the page (Node's own requests would not know the mapped host name).
    const api = await expect('GET /api/https from trust.html did not answer', 5_000,
      (ms) => page.evaluate(async (limit) => {
        const r = await fetch('/api/https', { cache: 'no-store', signal: AbortSignal.timeout(limit) });
        return r.json();
      }, ms));
    const ca = new X509Certificate(caPem);
    assert.equal(api.port, httpsPort, '/api/https should give the daemon\'s https port');
    assert.equal(api.caFingerprint, ca.fingerprint256, '/api/https should give the SHA-256 fingerprint of state/ca.crt');
    assert.equal((await page.textContent('[data-testid="ca-fingerprint"]')).trim(), api.caFingerprint,
      'trust.html should show the fingerprint /api/https gives');
    assert.equal(await page.getAttribute('[data-testid="secure-link"]', 'href'), secureUrl(),
      'trust.html should link to the https page on the real port');
    assert.equal(await page.evaluate(() => document.querySelector('details[data-os="android"]').open), true,
      'on an Android phone trust.html should open the Android steps');

    const download = await expect('clicking Download on trust.html did not start a download', 10_000,
      (ms) => Promise.all([page.waitForEvent('download', { timeout: ms }), page.click('[data-testid="ca-download"]')])
        .then(([d]) => d));
    assert.equal(download.suggestedFilename(), 'intercomd-ca.crt', 'the download should be named intercomd-ca.crt');
    const file = await expect('the download of the CA did not finish', 10_000, (ms) => Promise.race([
      download.path(),
      new Promise((_, reject) => setTimeout(() => reject(new Error('download.path() did not resolve')), ms)),
    ]));
    assert.ok(readFileSync(file).equals(ca.raw), 'the downloaded file should be state/ca.crt as DER, byte for byte');

    await screenshot(page, 'trust.png');
    await closePage('phone');
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('with --no-https the pages say there is no HTTPS listener', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'intercomd-browser-'));
    dirs.push(dir);
    const plain = startDaemon(dir, 0, ['--no-https']);
    try {
      const base = `http://${LOCAL_HOST}:${await plain.port}`;
      assert.equal(await plain.httpsPort, null);
      const page = await newPage('plain', trusting, PHONE);
      await expect(`the page did not load from ${base}/`, 10_000, (ms) => page.goto(`${base}/`, { timeout: ms }));
      await expect('the intercom page did not say that there is no HTTPS listener', 5_000,
        (ms) => page.waitForFunction(() => /no HTTPS listener/.test(document.getElementById('secure-warning').textContent),
          null, { timeout: ms }));
      assert.equal(await page.$('[data-testid="https-link"]'), null, 'no https link without an HTTPS listener');
      assert.equal(await page.$('[data-testid="trust-link"]'), null, 'no trust link without a CA');
      await expect(`${base}/trust.html did not load`, 10_000, (ms) => page.goto(`${base}/trust.html`, { timeout: ms }));
      await expect('trust.html did not say that there is no HTTPS listener (body data-ca="no-https")', 5_000,
        (ms) => page.waitForFunction(() => document.body.dataset.ca === 'no-https', null, { timeout: ms }));
      assert.equal(await page.isVisible('[data-testid="ca-download"]'), false, 'no download without a CA');
      await closePage('plain');
    } finally {
      await stopDaemon(plain.child);
    }
    t.diagnostic(`https tests ${((Date.now() - launched) / 1000).toFixed(1)} s after the browsers launched`);
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });
});
