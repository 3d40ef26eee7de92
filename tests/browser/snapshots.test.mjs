// Real-browser test of the pictures of visitors, with Chromium's fake camera:
//   1. the door station rings the room: before anyone answers, kitchen's ringing card shows the
//      door's still (a JPEG that decodes and is not one flat colour), served by the daemon;
//   2. nobody answers: the call log shows the ring with its thumbnail, which opens the picture;
//   3. after a daemon restart, a reloaded page's call log still shows the picture;
//   4. uploads from a page that are not the connected peer's own JPEG are refused with their
//      reason: another peer's token, a PNG, 5 MiB, a truncated JPEG.
//
// Run through ./run.sh DAEMON_BINARY (it sets INTERCOMD_BIN and isolates the network).
// SCREENSHOTS=DIR saves snapshot-ringing.png (390x844), the picture in README.md, there.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, startDaemon, stopDaemon, makeExpect, launchBrowser, screenshot, openPage,
  openDoorStation, openIntercom } from './lib.mjs';

const PICTURE = /^\/snapshots\/[0-9a-f]{32}\.jpg$/;

describe('pictures of visitors', { timeout: 120_000 }, () => {
  let workDir;
  let daemon;
  let port;
  let url;
  let browser;
  const logs = [];
  const pages = {};
  const expect = makeExpect(pages, logs);
  const pageErrors = () => logs.filter((l) => l.includes('PAGE ERROR'));
  const newPage = (name, options = {}) => openPage(browser, name, pages, logs, options);
  const stateIs = (page, state, ms) => page.waitForFunction((s) => document.body.dataset.state === s, state, { timeout: ms });

  /** What an <img> shows: its size once decoded, and how many distinct colours (coarsely) it has. */
  const looksAt = (page, selector) => page.evaluate(async (sel) => {
    const img = document.querySelector(sel);
    if (!img || !img.getAttribute('src')) return null;
    if (!img.complete) await new Promise((done) => { img.onload = done; img.onerror = done; });
    if (!img.naturalWidth) return { width: 0, height: 0, colours: 0, src: img.getAttribute('src') };
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const colours = new Set();
    for (let i = 0; i < data.length; i += 4 * 7) colours.add(`${data[i] >> 4},${data[i + 1] >> 4},${data[i + 2] >> 4}`);
    return { width: img.naturalWidth, height: img.naturalHeight, colours: colours.size, src: img.getAttribute('src') };
  }, selector);

  const openDoor = (name) => openDoorStation(newPage, expect, url, name);
  const openPanel = (name, options) => openIntercom(newPage, expect, url, name, options);

  before(async () => {
    assert.ok(BIN, 'set INTERCOMD_BIN to the daemon binary (or use tests/browser/run.sh DAEMON_BINARY)');
    workDir = mkdtempSync(join(tmpdir(), 'intercomd-snapshots-'));
    daemon = startDaemon(workDir, 0, ['--state-dir', join(workDir, 'state')]);
    port = await daemon.port;
    url = `http://127.0.0.1:${port}/`;
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await browser.close();
    if (daemon) await stopDaemon(daemon.child);
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  it('the door rings: the ringing card shows who is there, before anyone answers', async (t) => {
    const door = await openDoor();
    const kitchen = await openPanel('kitchen');
    await expect('the door did not see kitchen online', 10_000,
      (ms) => door.waitForFunction(() => window.door.peers.includes('kitchen'), null, { timeout: ms }));
    const rang = Date.now();
    await door.click('[data-testid="ring"]');
    await expect('kitchen did not ring', 10_000, (ms) => stateIs(kitchen, 'ringing', ms));
    await expect('kitchen\'s ringing card shows no picture', 10_000, (ms) => kitchen.waitForFunction(() => {
      const img = document.getElementById('incoming-picture');
      return !img.hidden && img.complete && img.naturalWidth > 0;
    }, null, { timeout: ms }));
    t.diagnostic(`the picture showed ${Date.now() - rang} ms after the ring was pressed`);
    const seen = await looksAt(kitchen, '#incoming-picture');
    assert.match(seen.src, PICTURE);
    assert.ok(Math.max(seen.width, seen.height) <= 640 && seen.width > 0, `a still within 640 px: ${JSON.stringify(seen)}`);
    assert.ok(seen.colours > 8, `the fake camera's frame, not one flat colour: ${JSON.stringify(seen)}`);
    assert.equal(await kitchen.isVisible('#accept-btn'), true, 'Accept beside the picture');
    assert.equal(await kitchen.isVisible('#reject-btn'), true, 'Reject beside the picture');
    await screenshot(kitchen, 'snapshot-ringing.png');

    const files = readdirSync(join(workDir, 'state', 'snapshots'));
    assert.deepEqual(files, [seen.src.slice('/snapshots/'.length)], 'kept in --state-dir/snapshots');

    // Nobody answers: the door gives up, and the call log keeps the visitor.
    await door.click('[data-testid="hangup"]');
    await expect('kitchen did not stop ringing', 10_000, (ms) => stateIs(kitchen, 'idle', ms));
    await expect('kitchen\'s call log shows no picture for the missed ring', 10_000, (ms) => kitchen.waitForFunction(() => {
      const li = document.querySelector('#rings-list > li');
      const img = li && li.querySelector('.ring-picture img');
      return li && li.dataset.outcome === 'missed' && img && img.complete && img.naturalWidth > 0;
    }, null, { timeout: ms }));
    const thumb = await looksAt(kitchen, '#rings-list > li .ring-picture img');
    assert.equal(thumb.src, seen.src, 'the thumbnail is the ring\'s picture');
    assert.equal(await kitchen.getAttribute('#rings-list > li .ring-picture', 'href'), seen.src, 'a tap opens the picture');
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('after a daemon restart, the call log still shows the picture', async () => {
    const { kitchen } = pages;
    const before = await looksAt(kitchen, '#rings-list > li .ring-picture img');
    await stopDaemon(daemon.child);
    daemon = startDaemon(workDir, port, ['--state-dir', join(workDir, 'state')]);
    await daemon.port;
    await expect('kitchen did not reload', 10_000, (ms) => kitchen.reload({ timeout: ms }));
    await expect('kitchen\'s call log lost the picture', 15_000, (ms) => kitchen.waitForFunction(() => {
      const img = document.querySelector('#rings-list > li .ring-picture img');
      return img && img.complete && img.naturalWidth > 0;
    }, null, { timeout: ms }));
    const after = await looksAt(kitchen, '#rings-list > li .ring-picture img');
    assert.equal(after.src, before.src);
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('uploads that are not the peer\'s own JPEG are refused with their reason', async () => {
    const kitchen = pages.kitchen;
    await expect('kitchen did not get online again', 15_000, (ms) => kitchen.waitForFunction(
      () => document.body.dataset.conn === 'connected', null, { timeout: ms }));
    const answers = await kitchen.evaluate(async () => {
      const token = SignalKit.token();
      const jpeg = await new Promise((done) => {
        const canvas = document.createElement('canvas');
        canvas.width = 32;
        canvas.height = 24;
        canvas.getContext('2d').fillRect(0, 0, 8, 8);
        canvas.toBlob(done, 'image/jpeg', 0.8);
      });
      const png = await new Promise((done) => document.createElement('canvas').toBlob(done, 'image/png'));
      const bytes = new Uint8Array(await jpeg.arrayBuffer());
      const post = async (query, body) => {
        const r = await fetch(`/api/snapshots?${query}`, { method: 'POST', body, headers: { 'Content-Type': 'image/jpeg' } });
        return [r.status, (await r.json().catch(() => ({}))).error || ''];
      };
      return {
        own: await post(`id=kitchen&token=${token}`, jpeg),
        otherPeer: await post(`id=door&token=${token}`, jpeg),
        png: await post(`id=kitchen&token=${token}`, png),
        huge: await post(`id=kitchen&token=${token}`, new Uint8Array(5 << 20)),
        truncated: await post(`id=kitchen&token=${token}`, bytes.slice(0, bytes.length - 20)),
      };
    });
    assert.equal(answers.own[0], 201, `the page's own JPEG is kept: ${answers.own}`);
    assert.deepEqual(answers.otherPeer, [403, 'not the connected peer with that id and token']);
    assert.equal(answers.png[0], 415);
    assert.match(answers.png[1], /not a JPEG/);
    assert.deepEqual(answers.huge, [413, 'larger than 100 KiB']);
    assert.equal(answers.truncated[0], 415);
    assert.match(answers.truncated[1], /truncated/);
    assert.equal(readdirSync(join(workDir, 'state', 'snapshots')).length, 2, 'only the two good pictures are kept');
  });
});
