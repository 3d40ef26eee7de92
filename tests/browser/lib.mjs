// Shared pieces of the real-browser tests: start and stop the daemon, launch
// Chromium with the flags WebRTC needs on a loopback-only machine, and waits
// that fail with a message saying what did not happen.
//
// Environment:
//   INTERCOMD_BIN   path of the daemon binary (required; run.sh sets it)
//   INTERCOMD_WWW   optional: serve the pages from this folder (--www) instead of the embedded copy
//   CHROMIUM_BIN    optional: browser binary, default /usr/bin/chromium
//   HEADFUL=1       optional: show the browser windows (needs a display)
import { spawn } from 'node:child_process';
import { chromium } from 'playwright-core';

export const BIN = process.env.INTERCOMD_BIN;
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
];

/** Starts the daemon on a free loopback port; resolves once it logs its address. */
export function startDaemon(cwd) {
  const args = ['--listen', '127.0.0.1:0'];
  if (process.env.INTERCOMD_WWW) args.push('--www', process.env.INTERCOMD_WWW);
  const child = spawn(BIN, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const port = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(
      `intercomd did not log "listening on http://127.0.0.1:PORT" within 10 s; its output so far:\n${output}`)), 10_000);
    const onData = (chunk) => {
      output += chunk;
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onData);
    child.on('error', (e) => { clearTimeout(timer); reject(new Error(`cannot start ${BIN}: ${e.message}`)); });
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`intercomd exited (code ${code}, signal ${sig}) before listening; output:\n${output}`));
    });
  });
  return { child, port, output: () => output };
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


/** Launches headless Chromium with a fresh temporary profile (removed on close). */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: !process.env.HEADFUL,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
}
