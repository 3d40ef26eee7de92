// Real-browser test of onboarding a phone by one scan:
//   1. the plain-http intercom, room and door pages, the status page and the trust page each show
//      a QR code; read back from the browser's own rendering by zbarimg (an independent decoder),
//      each is exactly the daemon's onboarding address (trust.html?onboard, with the page to come
//      back to), on the host the page was opened by;
//   2. a browser that does not trust the local CA, sent there, stays on the trust page with the
//      steps, the iOS profile and a button that checks again;
//   3. a browser that trusts it goes on to the https page it came for, by itself.
//
// Run through ./run.sh DAEMON_BINARY (it sets INTERCOMD_BIN, installs zbar-tools and isolates the
// network). SCREENSHOTS=DIR saves onboard-plain.png and onboard-phone.png there.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BIN, INSECURE_HOST, LOCAL_HOST, PHONE_VIEWPORT, homeTrusting, startDaemon, stopDaemon, makeExpect, launchBrowser,
  screenshot, openPage,
} from './lib.mjs';

describe('onboarding a phone by one scan', { timeout: 120_000 }, () => {
  let workDir;
  let home;
  let daemon;
  let port;
  let httpsPort;
  let browser;
  let trusting;
  const logs = [];
  const pages = {};
  const expect = makeExpect(pages, logs);
  const pageErrors = () => logs.filter((l) => l.includes('PAGE ERROR'));
  const newPage = (name, options = {}) => openPage(browser, name, pages, logs, options);
  // The pages opened by a name that is not a secure context, as a phone on the LAN opens them.
  const plain = (path) => `http://${INSECURE_HOST}:${port}${path}`;
  const onboarding = (next) => `${plain('/trust.html?onboard')}${next ? `=${encodeURIComponent(next)}` : ''}`;

  // What zbarimg reads off the QR code on `page` as the browser drew it.
  async function scan(page, name) {
    const figure = page.locator('[data-testid="onboard-qr"]');
    await expect(`${name}: no QR code was shown`, 10_000, (ms) => figure.waitFor({ timeout: ms }));
    await expect(`${name}: the QR code image did not load`, 10_000, (ms) => page.waitForFunction(() => {
      const img = document.querySelector('[data-testid="onboard-qr"] img');
      return img && img.complete && img.naturalWidth > 0;
    }, null, { timeout: ms }));
    const file = join(workDir, `${name}.png`);
    writeFileSync(file, await figure.locator('img').screenshot());
    try {
      return execFileSync('zbarimg', ['--raw', '-q', '-Sbinary', file], { encoding: 'utf8' }).replace(/\n$/, '');
    } catch (e) {
      throw new Error(`${name}: zbarimg read nothing from ${file} (exit ${e.status}): ${e.stderr || e.message}`);
    }
  }

  before(async () => {
    assert.ok(BIN, 'set INTERCOMD_BIN to the daemon binary (or use tests/browser/run.sh DAEMON_BINARY)');
    workDir = mkdtempSync(join(tmpdir(), 'intercomd-onboard-'));
    daemon = startDaemon(workDir);
    port = await daemon.port;
    httpsPort = await daemon.httpsPort;
    home = homeTrusting(join(workDir, 'state', 'ca.crt'));
    browser = await launchBrowser();
    trusting = await launchBrowser({ env: { ...process.env, HOME: home } });
  });

  after(async () => {
    if (browser) await browser.close();
    if (trusting) await trusting.close();
    if (daemon) await stopDaemon(daemon.child);
    for (const dir of [workDir, home]) if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the plain pages, the status page and the trust page show a code that reads back to the onboarding address', async () => {
    const cases = [
      ['intercom', '/', onboarding(null)],
      ['room', '/room.html?room=kitchen', onboarding('/room.html?room=kitchen')],
      ['door', '/door.html?id=porch&room=lobby', onboarding('/door.html?id=porch&room=lobby')],
      ['status', '/status.html', onboarding(null)],
      ['trust', '/trust.html', onboarding(null)],
    ];
    for (const [name, path, wanted] of cases) {
      const page = await newPage(name, { viewport: { width: 900, height: 1000 } });
      await expect(`${name}: ${path} did not load`, 10_000, (ms) => page.goto(plain(path), { timeout: ms }));
      assert.equal(await scan(page, name), wanted, `${name}: the QR code`);
      assert.equal(await page.getAttribute('[data-testid="onboard-qr"]', 'data-url'), wanted);
      assert.equal(await page.textContent('[data-testid="onboard-qr"] code'), wanted, `${name}: the address written out`);
      if (name === 'intercom') await screenshot(page, 'onboard-plain.png');
    }
    // The page opened at the Pi itself (loopback) still gives a phone the host it can reach: here,
    // in a network namespace with loopback only, that is the one address the daemon listens on.
    const api = await (await pages.status.request.get(`http://127.0.0.1:${port}/api/https`)).json();
    assert.equal(api.onboard, `http://127.0.0.1:${port}/trust.html?onboard`);
    assert.deepEqual(pageErrors(), []);
  });

  it('a phone that does not trust the intercom yet stays on the trust page, with the steps and the iOS profile', async () => {
    const phone = await newPage('phone', {
      viewport: PHONE_VIEWPORT,
      // Safari on an iPhone: the profile comes first.
      userAgent: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) ' +
        'Version/17.5 Mobile/15E148 Safari/604.1',
    });
    const wanted = `http://${LOCAL_HOST}:${port}/trust.html?onboard=${encodeURIComponent('/room.html?room=kitchen')}`;
    await expect('the trust page did not load', 10_000, (ms) => phone.goto(wanted, { timeout: ms }));
    await expect('the trust page did not find that this browser does not trust the CA', 10_000,
      (ms) => phone.waitForFunction(() => document.body.dataset.onboard === 'install', null, { timeout: ms }));
    assert.equal(phone.url(), wanted, 'it stays where it is');
    assert.equal(await phone.isVisible('[data-testid="onboard-continue"]'), true);
    assert.equal(await phone.isVisible('[data-testid="onboard-qr"]'), false, 'no code to scan on the phone itself');
    assert.equal(await phone.getAttribute('[data-testid="ca-mobileconfig"]', 'href'), '/intercomd-ca.mobileconfig');
    assert.equal(await phone.isVisible('[data-testid="ca-mobileconfig"]'), true);
    assert.equal(await phone.$eval('[data-testid="ca"] a.button', (a) => a.dataset.testid), 'ca-mobileconfig',
      'on an iPhone the profile is the first button');
    assert.equal(await phone.$eval('#steps details[open]', (d) => d.dataset.os), 'ios', 'the iPhone steps are open');
    assert.match(await phone.textContent('#steps details[data-os="ios"]'), /Certificate Trust Settings/);
    await screenshot(phone, 'onboard-phone.png');
    // Checking again before the certificate is trusted says so, and stays.
    await phone.click('[data-testid="onboard-continue"]');
    await expect('checking again did not say that the device still does not trust the intercom', 10_000,
      (ms) => phone.waitForFunction(() => document.body.dataset.onboard === 'install' &&
        /does not trust the intercom yet/.test(document.getElementById('onboard-text').textContent), null, { timeout: ms }));
    assert.equal(phone.url(), wanted);
    assert.deepEqual(pageErrors(), []);
  });

  it('a phone that trusts the intercom goes on to the https page it came for, by itself', async () => {
    const ctx = await trusting.newContext({ viewport: PHONE_VIEWPORT });
    const phone = await ctx.newPage();
    phone.on('pageerror', (e) => logs.push(`trusting PAGE ERROR: ${e.message}`));
    const secure = `https://${LOCAL_HOST}:${httpsPort}/room.html?room=kitchen`;
    await phone.goto(`http://${LOCAL_HOST}:${port}/trust.html?onboard=${encodeURIComponent('/room.html?room=kitchen')}`);
    await expect(`the trust page did not go on to ${secure}`, 15_000,
      (ms) => phone.waitForURL(secure, { timeout: ms }));
    await expect('the room page did not load on the https origin', 10_000,
      (ms) => phone.waitForFunction(() => window.isSecureContext && document.readyState === 'complete', null, { timeout: ms }));
    // A path of another origin is never followed: it goes to the intercom's own / instead.
    await phone.goto(`http://${LOCAL_HOST}:${port}/trust.html?onboard=${encodeURIComponent('//evil.example/')}`);
    await expect('an onboarding address with another origin did not go to the https intercom', 15_000,
      (ms) => phone.waitForURL(`https://${LOCAL_HOST}:${httpsPort}/`, { timeout: ms }));
    await ctx.close();
    assert.deepEqual(pageErrors(), []);
  });
});
