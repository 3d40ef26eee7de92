// Shared pieces of the real-browser tests: start and stop the daemon, launch
// Chromium with the flags WebRTC needs on a loopback-only machine, and waits
// that fail with a message saying what did not happen.
//
// Environment:
//   INTERCOMD_BIN   path of the daemon binary (required; run.sh sets it)
//   INTERCOMD_WWW   optional: serve the pages from this folder (--www) instead of the embedded copy
//   CHROMIUM_BIN    optional: browser binary, default /usr/bin/chromium
//   HEADFUL=1       optional: show the browser windows (needs a display)
//   SCREENSHOTS=DIR optional: where the suite saves its screenshots (run.sh sets it;
//                   SCREENSHOTS=docs refreshes the ones README shows)
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const BIN = process.env.INTERCOMD_BIN;
export const INSECURE_HOST = 'intercom.test';
// The name the daemon's generated server certificate holds for this machine: <host name>.local,
// or the host name itself when it already has a domain (src/tls.rs local_names).
const HOST = hostname().trim().replace(/\.$/, '').toLowerCase();
export const LOCAL_HOST = HOST.includes('.') ? HOST : `${HOST}.local`;
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
  // Host names that are not localhost, for the insecure-context tests: Chromium counts all of
  // 127.0.0.0/8 and localhost as secure, http://intercom.test:PORT/ is not. LOCAL_HOST is the
  // name the daemon's certificate holds, for https with a trusted CA (https.test.mjs).
  `--host-resolver-rules=MAP ${INSECURE_HOST} 127.0.0.1, MAP ${LOCAL_HOST} 127.0.0.1`,
];

/**
 * Starts the daemon on loopback, on a free port or on `port` (a restart keeps the pages'
 * address valid), with `extraArgs` added to its command line. `port` resolves once it logs its
 * http address, `httpsPort` once it logs its https one (null with --no-https).
 * `--https-listen 127.0.0.1:PORT` in `extraArgs` keeps the https address across a restart too.
 */
export function startDaemon(cwd, port = 0, extraArgs = []) {
  // HTTPS on a free port of its own (test files run in parallel, so never the default 8443);
  // its generated certificate goes to ./state under cwd.
  const args = ['--listen', `127.0.0.1:${port}`];
  if (!extraArgs.includes('--https-listen')) args.push('--https-listen', '127.0.0.1:0');
  // INTERCOMD_WWW is for the product pages: a test that serves its own folder (--www) keeps it.
  if (process.env.INTERCOMD_WWW && !extraArgs.includes('--www')) args.push('--www', process.env.INTERCOMD_WWW);
  args.push(...extraArgs);
  const noHttps = extraArgs.includes('--no-https');
  const child = spawn(BIN, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  // Resolves with the port in the first line `re` matches; rejects after 10 s or when the daemon ends first.
  const waitLog = (re, what) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(
      `intercomd did not log "${what}" within 10 s; its output so far:\n${output}`)), 10_000);
    const check = () => {
      const m = re.exec(output);
      if (!m) return false;
      clearTimeout(timer);
      resolve(Number(m[1]));
      return true;
    };
    // After the listeners below that collect `output` (registered first).
    child.stdout.on('data', check);
    child.stderr.on('data', check);
    child.on('error', (e) => { clearTimeout(timer); reject(new Error(`cannot start ${BIN}: ${e.message}`)); });
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      if (!check()) reject(new Error(`intercomd exited (code ${code}, signal ${sig}) before logging "${what}"; output:\n${output}`));
    });
  });
  child.stdout.setEncoding('utf8').on('data', (chunk) => { output += chunk; });
  child.stderr.setEncoding('utf8').on('data', (chunk) => { output += chunk; });
  const listening = waitLog(/listening on http:\/\/127\.0\.0\.1:(\d+)/, 'listening on http://127.0.0.1:PORT');
  const httpsPort = noHttps ? listening.then(() => null)
    : waitLog(/listening on https:\/\/127\.0\.0\.1:(\d+)/, 'listening on https://127.0.0.1:PORT');
  // A caller that never asks for httpsPort must not get an unhandled rejection from it.
  httpsPort.catch(() => {});
  return { child, port: listening, httpsPort, output: () => output };
}

export async function stopDaemon(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(t);
}

/** Page status line and state, for failure messages. */
export async function describe(page) {
  try {
    return await page.evaluate(() =>
      `state=${document.body.dataset.state} conn=${document.body.dataset.conn} ` +
      `ice=${document.body.dataset.ice || '-'} status="${document.getElementById('status-text')?.textContent}"`);
  } catch (e) {
    return `(page not readable: ${e.message})`;
  }
}

/**
 * Runs wait(timeoutMs); on failure throws `${what} within N s` plus both pages' state and recent console output.
 */
export function makeExpect(pages, logs) {
  return async function expect(what, timeoutMs, wait) {
    try {
      return await wait(timeoutMs);
    } catch (e) {
      const states = [];
      for (const [name, page] of Object.entries(pages)) states.push(`  ${name}: ${await describe(page)}`);
      const recent = logs.slice(-30).map((l) => `  ${l}`).join('\n');
      throw new Error(`${what} within ${timeoutMs / 1000} s\n` +
        `pages:\n${states.join('\n')}\ncause: ${String(e.message).split('\n')[0]}\nrecent browser console:\n${recent}`);
    }
  };
}

/** Inbound audio bytes of window.intercom.pc (sum over inbound-rtp kind audio). */
export async function inboundAudioBytes(page) {
  return page.evaluate(async () => {
    const pc = window.intercom && window.intercom.pc;
    if (!pc) return -1;
    const stats = await pc.getStats();
    let bytes = 0;
    stats.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'audio') bytes += r.bytesReceived || 0; });
    return bytes;
  });
}

/** Polls until inbound audio bytes exceed `above`; resolves with the count, throws on timeout. */
export async function waitAudioAbove(page, above, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last = -1;
  while (Date.now() < deadline) {
    last = await inboundAudioBytes(page);
    if (last > above) return last;
    await page.waitForTimeout(100); // polling interval of getStats, not a wait for an event
  }
  throw new Error(`inbound audio bytesReceived stayed at ${last} (needed more than ${above})`);
}


/** An empty HOME with an NSS database that trusts `caFile` for websites, as `certutil` makes it. */
export function homeTrusting(caFile) {
  const home = mkdtempSync(join(tmpdir(), 'intercomd-home-'));
  const db = join(home, '.pki', 'nssdb');
  mkdirSync(db, { recursive: true });
  const certutil = (...args) => {
    try {
      execFileSync('certutil', ['-d', `sql:${db}`, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      throw new Error(`certutil ${args.join(' ')} failed (Debian package libnss3-tools; run.sh installs it): ` +
        `${e.code === 'ENOENT' ? 'certutil not found' : `${e.message}\n${e.stderr || ''}`}`);
    }
  };
  certutil('-N', '--empty-password');
  certutil('-A', '-n', 'intercomd', '-t', 'C,,', '-i', caFile);
  return home;
}

/**
 * Launches headless Chromium with a fresh temporary profile (removed on close).
 * options.env: its environment (default: this process's), e.g. another HOME, whose
 * .pki/nssdb is the certificate store Chromium on Linux trusts besides its own roots;
 * options.args: more command-line flags.
 */
export function launchBrowser(options = {}) {
  return chromium.launch(launchOptions(options));
}

function launchOptions({ env, args = [] }) {
  return {
    executablePath: CHROMIUM,
    headless: !process.env.HEADFUL,
    args: [...CHROMIUM_ARGS, ...args],
    ...(env ? { env } : {}),
    timeout: 30_000,
  };
}

/**
 * Launches headless Chromium with a profile kept in `userDataDir` and returns its one browser
 * context. Unlike launchBrowser's contexts this is not an incognito context, where Chromium
 * never offers to install an app (DevTools' installability check says "in-incognito").
 * options as for launchBrowser.
 */
export function launchPersistent(userDataDir, options = {}) {
  return chromium.launchPersistentContext(userDataDir, launchOptions(options));
}

/** Polls `sample` every 100 ms until `ok(value)`; throws `says(last value)` on timeout. */
export async function poll(sample, ok, timeoutMs, says) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await sample();
    if (ok(last)) return last;
    if (Date.now() >= deadline) throw new Error(says(last));
    await new Promise((r) => setTimeout(r, 100)); // polling interval of getStats, not a wait for an event
  }
}

/**
 * Video as the intercom page shows it: frames decoded on window.intercom.pc and the size of
 * the remote <video> (0 until a frame is painted); null without a call.
 */
export function remoteVideo(page) {
  return page.evaluate(async () => {
    const pc = window.intercom && window.intercom.pc;
    if (!pc) return null;
    const v = document.getElementById('remote-video');
    const out = { frames: 0, width: v.videoWidth, height: v.videoHeight, hidden: v.hidden };
    (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') out.frames += r.framesDecoded || 0; });
    return out;
  });
}

/** Saves a screenshot as DIR/name when SCREENSHOTS=DIR is set; returns the path or null. */
export async function screenshot(page, name) {
  const dir = process.env.SCREENSHOTS;
  if (!dir) return null;
  mkdirSync(dir, { recursive: true });
  const path = join(dir, name);
  // No focus ring or blinking caret in the picture; the whole page, not just what is scrolled into view.
  await page.evaluate(() => { if (document.activeElement) document.activeElement.blur(); window.scrollTo(0, 0); });
  await page.screenshot({ path, fullPage: true, caret: 'hide' });
  return path;
}

/**
 * A page in a browser context of its own (separate storage, so a token of its own), registered
 * in `pages` under `name`, its console and uncaught errors collected in `logs` for failure messages.
 */
export async function openPage(browser, name, pages, logs, contextOptions = {}) {
  const ctx = await browser.newContext(contextOptions);
  const page = await ctx.newPage();
  page.on('console', (m) => logs.push(`${name} console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`${name} PAGE ERROR: ${e.message}`));
  pages[name] = page;
  return page;
}

/** A door station's touchscreen, and a phone. */
export const KIOSK_VIEWPORT = { width: 800, height: 480 };
export const PHONE_VIEWPORT = { width: 390, height: 844 };

/**
 * door.html at `url` as `name`, ringing everyone in the room "lobby", once it is ready to ring.
 * `newPage(name, contextOptions)` opens a page (see openPage); `expect` is makeExpect's.
 */
export async function openDoorStation(newPage, expect, url, name = 'door') {
  const page = await newPage(name, { viewport: KIOSK_VIEWPORT });
  await expect(`${name}: door.html did not load`, 10_000,
    (ms) => page.goto(`${url}door.html?id=${name}&room=lobby&call=*`, { timeout: ms }));
  await expect(`${name} did not become ready`, 10_000, (ms) => page.waitForFunction(
    () => document.body.dataset.state === 'ready' && !document.getElementById('ring-btn').disabled, null, { timeout: ms }));
  return page;
}

/** The intercom page at `url` in the room "lobby", online as `name` (phone-sized unless `options` say otherwise). */
export async function openIntercom(newPage, expect, url, name, options = {}) {
  const page = await newPage(name, { viewport: PHONE_VIEWPORT, ...options });
  await expect(`${name}'s intercom page did not load`, 10_000, (ms) => page.goto(`${url}?room=lobby`, { timeout: ms }));
  await page.fill('#name-input', name);
  await page.click('#connect-btn');
  await expect(`${name} did not get online`, 10_000, (ms) => page.waitForFunction(
    (n) => document.body.dataset.conn === 'connected' && window.intercom.id === n, name, { timeout: ms }));
  return page;
}
