// The pieces of webkit.test.mjs that are not about the pages: WebKitGTK (the engine Safari is
// built on) driven through the standard W3C WebDriver HTTP protocol with node's own fetch, a bare
// WebSocket peer of the daemon's /ws, and an HTTP proxy that gives loopback a host name that is
// not localhost. No npm package: playwright-core cannot drive WebKitGTK's MiniBrowser, and
// WebKitWebDriver only speaks plain WebDriver.
//
// Environment (all optional):
//   WEBKIT_WEBDRIVER  the driver, default /usr/bin/WebKitWebDriver (Debian package webkit2gtk-driver)
//   WEBKIT_BROWSER    the browser it starts, default MiniBrowser of libwebkit2gtk-4.1-0
//   WEBKIT_LOG=1      echo what the driver and the browser print (stderr: GTK, GStreamer) as it comes
//
// WebKitWebDriver has no log endpoint, and MiniBrowser's enable-write-console-messages-to-stdout
// printed nothing here (2.50.6), so Session.watch() hooks the page itself: uncaught errors,
// unhandled rejections and console.warn/error from the moment it is called (after the load).
//
// MiniBrowser is a GTK program: it needs an X display (xvfb-run, Debian package xvfb).
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants } from 'node:fs';
import http from 'node:http';
import net from 'node:net';

export const WEBKIT_WEBDRIVER = process.env.WEBKIT_WEBDRIVER || '/usr/bin/WebKitWebDriver';
export const WEBKIT_BROWSER = process.env.WEBKIT_BROWSER || '/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser';

/**
 * MiniBrowser's flags. Media: WebKitGTK's own fake camera and microphone, granted without a
 * prompt in automation mode (what the tests need; a real MiniBrowser asks). Autoplay as Safari
 * does it: sound only after a user gesture.
 */
export const WEBKIT_ARGS = [
  '--automation',
  '--enable-media-stream=true',
  '--enable-mock-capture-devices=true',
  '--enable-webrtc=true',             // asked for; this build has none (RTCPeerConnection stays undefined)
  '--enable-webaudio=true',
  '--media-playback-requires-user-gesture=true',
  '--autoplay-policy=allow-without-sound',
];

/** Throws a message naming the Debian packages when the driver, the browser or a display is missing. */
export function requireWebKit() {
  const missing = [];
  for (const [file, pkg] of [[WEBKIT_WEBDRIVER, 'webkit2gtk-driver'], [WEBKIT_BROWSER, 'libwebkit2gtk-4.1-0 (pulled in by webkit2gtk-driver)']]) {
    try { accessSync(file, constants.X_OK); } catch { missing.push(`${file} is missing: apt-get install -y ${pkg}`); }
  }
  if (!process.env.DISPLAY && !process.env.WAYLAND_DISPLAY) {
    missing.push('no X display (DISPLAY is not set): run the test under xvfb-run -a (Debian package xvfb)');
  }
  if (missing.length) {
    throw new Error(`WebKitGTK cannot run here:\n  ${missing.join('\n  ')}\n` +
      'The whole command: apt-get install -y webkit2gtk-driver xvfb');
  }
}

/** A free TCP port on 127.0.0.1 (for programs that want a port number on their command line). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts WebKitWebDriver on 127.0.0.1 and resolves once /status says it is ready. It allows one
 * session (one browser) at a time. `output()` is everything it and its browsers printed.
 */
export async function startDriver() {
  requireWebKit();
  const port = await freePort();
  const child = spawn(WEBKIT_WEBDRIVER, [`--port=${port}`, '--host=127.0.0.1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const collect = (chunk) => { out += chunk; if (process.env.WEBKIT_LOG) process.stderr.write(chunk); };
  child.stdout.setEncoding('utf8').on('data', collect);
  child.stderr.setEncoding('utf8').on('data', collect);
  let exited = null;
  child.on('exit', (code, sig) => { exited = `exited (code ${code}, signal ${sig})`; });
  child.on('error', (e) => { exited = `could not start: ${e.message}`; });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited) throw new Error(`${WEBKIT_WEBDRIVER} ${exited}; output:\n${out}`);
    try {
      const r = await fetch(`${url}/status`);
      const body = await r.json();
      if (body.value && body.value.ready) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`${WEBKIT_WEBDRIVER} did not answer /status within 20 s; output:\n${out}`); }
    await sleep(100); // polling interval: the driver has no readiness event
  }
  return {
    url, child,
    output: () => out,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    },
  };
}

const ELEMENT = 'element-6066-11e4-a52e-4f735466cecf';

/** One WebDriver session: one MiniBrowser with its own profile. */
export class Session {
  constructor(driverUrl, id, capabilities) {
    this.base = `${driverUrl}/session/${id}`;
    this.id = id;
    this.capabilities = capabilities;
  }

  /** A new session; `args` are MiniBrowser's command line (WEBKIT_ARGS by default). */
  static async create(driver, { args = WEBKIT_ARGS, timeoutMs = 60_000 } = {}) {
    const body = {
      capabilities: {
        alwaysMatch: {
          'webkitgtk:browserOptions': { binary: WEBKIT_BROWSER, args },
          // No waiting for the load in WebKit's automation: with "normal" or "eager", in 4 runs
          // of 5 a navigation (or a script right after a reload) did not answer for 30 s, 60 s or
          // ever, although the new page was up (readyState "complete", its load event fired,
          // online). Cause not found (the camera was not it; the pages' EventSource is a
          // suspect). open() waits for the new document itself, and every test for its state.
          pageLoadStrategy: 'none',
          timeouts: { script: 30_000, pageLoad: 30_000, implicit: 0 },
        },
      },
    };
    const value = await wd('POST', `${driver.url}/session`, body, timeoutMs);
    return new Session(driver.url, value.sessionId, value.capabilities);
  }

  cmd(method, path, body) { return wd(method, `${this.base}${path}`, body); }

  /** Starts loading `url` (returns at once: pageLoadStrategy "none"; open() waits). */
  goto(url) { return this.cmd('POST', '/url', { url }); }

  /**
   * Hooks the current page: uncaught errors (with file, line and column), unhandled rejections,
   * and console.warn / console.error calls are kept for errors() and warnings(). Call after
   * every load; what a page throws while it loads shows as a page that never reaches its state.
   */
  watch() {
    return this.exec(() => {
      if (window.__wk) return;
      const w = window.__wk = { errors: [], console: [] };
      // No camera: WebKitGTK 2.50's mock camera stalls the automation every other run here (after
      // getUserMedia with video, a script or a later navigation never answers; audio alone never
      // did). A camera that is not there is a case the pages handle: they go on with audio only.
      const md = navigator.mediaDevices;
      if (md && md.getUserMedia) {
        const gum = md.getUserMedia.bind(md);
        md.getUserMedia = (c) => (c && c.video
          ? Promise.reject(new DOMException('Requested device not found', 'NotFoundError'))
          : gum(c));
      }
      const text = (x) => (x instanceof Error ? `${x.name}: ${x.message}` : String(x));
      addEventListener('error', (e) => w.errors.push(`${e.message} (${e.filename}:${e.lineno}:${e.colno})`));
      addEventListener('unhandledrejection', (e) => w.errors.push(`unhandled rejection: ${e.reason && e.reason.stack ? e.reason.stack : text(e.reason)}`));
      for (const k of ['warn', 'error']) {
        const orig = console[k];
        console[k] = function (...a) { w.console.push(`console.${k}: ${a.map(text).join(' ')}`); return orig.apply(this, a); };
      }
    });
  }

  /** Uncaught errors since watch() (a note instead when the page was replaced without a new watch()). */
  errors() {
    return this.exec(() => (window.__wk ? window.__wk.errors.slice() : ['(the page was replaced: no error hooks)']));
  }

  /** console.warn and console.error calls since watch(). */
  warnings() {
    return this.exec(() => (window.__wk ? window.__wk.console.slice() : []));
  }

  /** Loads `url`, waits until the new document is parsed, and hooks it (watch). */
  async open(url) {
    await this.markOld();
    await this.goto(url);
    await this.waitFor(`${url} did not load`, 30_000,
      (u) => !window.__wkOld && location.href === u && document.readyState !== 'loading', new URL(url).href);
    await this.watch();
  }

  /** Reloads the page (WebDriver refresh), waits for the new document, and hooks it (watch). */
  async reload() {
    await this.markOld();
    await this.cmd('POST', '/refresh', {});
    await this.waitFor('the page did not reload', 30_000, () => !window.__wkOld && document.readyState !== 'loading');
    await this.watch();
  }

  /** Marks the current document, so that waits can tell the next one from it (WebDriver returns at once). */
  markOld() {
    return this.exec(() => { window.__wkOld = true; }).catch(() => {}); // about:blank at the start is fine too
  }

  /** Runs `fn` (a function, or the source of a function body) in the page and returns its result. */
  exec(fn, ...args) {
    const script = typeof fn === 'function' ? `return (${fn}).apply(null, arguments);` : fn;
    return this.cmd('POST', '/execute/sync', { script, args });
  }

  /** Runs the async `fn` in the page and returns what its promise resolves to. */
  execAsync(fn, ...args) {
    const script = `const done = arguments[arguments.length - 1];
      Promise.resolve((${fn}).apply(null, Array.prototype.slice.call(arguments, 0, -1)))
        .then((v) => done({ ok: v }), (e) => done({ err: String(e && e.stack || e) }));`;
    return this.cmd('POST', '/execute/async', { script, args }).then((r) => {
      if (r && 'err' in r) throw new Error(`in the page: ${r.err}`);
      return r && r.ok;
    });
  }

  async find(css) {
    const v = await this.cmd('POST', '/element', { using: 'css selector', value: css });
    return v[ELEMENT];
  }

  /**
   * A WebDriver click: WebKit's automation sends it as a real mouse event through the
   * window (isTrusted, and a user gesture for the page's autoplay and media rules).
   */
  async click(css) {
    const el = await this.find(css);
    await this.cmd('POST', `/element/${el}/click`, {});
  }

  /** Clears the field and types `text` into it (real key events). */
  async type(css, text) {
    const el = await this.find(css);
    await this.cmd('POST', `/element/${el}/clear`, {});
    await this.cmd('POST', `/element/${el}/value`, { text });
  }

  /** Whether the element is shown (WebDriver's own rule, as a user sees it). */
  async displayed(css) {
    const el = await this.find(css);
    return this.cmd('GET', `/element/${el}/displayed`);
  }

  /**
   * Polls `fn(...args)` in the page until it returns something truthy, and returns that. After
   * `timeoutMs` throws `what`, with what `describe` (page source of a function) says about the page.
   */
  async waitFor(what, timeoutMs, fn, ...args) {
    const deadline = Date.now() + timeoutMs;
    let last;
    let err = null;
    for (;;) {
      try {
        last = await this.exec(fn, ...args);
        err = null;
        if (last) return last;
      } catch (e) { err = e; } // a page being replaced answers with an error for a moment
      if (Date.now() >= deadline) {
        const state = await this.describe().catch((e) => `(page not readable: ${e.message})`);
        throw new Error(`${what} within ${timeoutMs / 1000} s\n  page: ${state}` +
          `${err ? `\n  last error: ${err.message}` : `\n  last value: ${JSON.stringify(last)}`}`);
      }
      await sleep(100); // polling interval: WebDriver has no page events
    }
  }

  /** The page's state and status line, for failure messages. */
  describe() {
    return this.exec(() => {
      const b = document.body;
      const st = document.getElementById('status-text');
      return `${location.href} (${document.readyState}) state=${b && b.dataset.state} conn=${b && b.dataset.conn} ` +
        `status="${st ? st.textContent : ''}"`;
    });
  }

  /** A fresh window (a tab in MiniBrowser) of the same browser, switched to. */
  async newWindow() {
    const v = await this.cmd('POST', '/window/new', { type: 'tab' });
    await this.cmd('POST', '/window', { handle: v.handle });
    return v.handle;
  }

  switchTo(handle) { return this.cmd('POST', '/window', { handle }); }
  windowHandle() { return this.cmd('GET', '/window'); }
  closeWindow() { return this.cmd('DELETE', '/window'); }
  screenshot() { return this.cmd('GET', '/screenshot'); }

  async close() {
    try { await wd('DELETE', this.base, undefined, 20_000); } catch { /* the browser is gone already */ }
  }
}

/** One WebDriver command; resolves with `value`, throws the driver's error and message. */
async function wd(method, url, body, timeoutMs = 60_000) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  let r;
  let text;
  try {
    r = await fetch(url, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json; charset=utf-8' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: ctl.signal,
    });
    text = await r.text();
  } catch (e) {
    throw new Error(`WebDriver ${method} ${url.replace(/^http:\/\/[^/]+/, '')}: ${e.name === 'AbortError' ? `no answer within ${timeoutMs / 1000} s` : e.message}`);
  } finally {
    clearTimeout(timer);
  }
  let json;
  try { json = JSON.parse(text); } catch { json = null; }
  if (!r.ok || (json && json.value && json.value.error)) {
    const v = (json && json.value) || {};
    const e = new Error(`WebDriver ${method} ${url.replace(/^http:\/\/[^/]+/, '')}: ${r.status} ${v.error || ''}: ${v.message || text}`);
    e.wdError = v.error;
    throw e;
  }
  return json ? json.value : null;
}

// ------------------------------------------------------------------ a bare WebSocket peer
/**
 * A peer of the daemon's /ws without a browser: what a script, a native app or another
 * engine would send. `messages` holds every JSON message received; waitFor polls it.
 * Speaks just enough RFC 6455 for JSON text frames (masked client frames, pings answered).
 */
export function wsPeer(port, query) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const key = randomBytes(16).toString('base64');
    const qs = new URLSearchParams(query).toString();
    let buf = Buffer.alloc(0);
    let open = false;
    let closed = null;
    const messages = [];
    const waiters = new Set();
    const wake = () => { for (const w of waiters) w(); };
    const peer = {
      messages,
      get closed() { return closed; },
      send(obj) { sock.write(frame(0x1, Buffer.from(JSON.stringify(obj)))); },
      /** Resolves with the first message (counting from `from`) that `pred` accepts. */
      waitFor(what, timeoutMs, pred, from = 0) {
        return new Promise((res, rej) => {
          const check = () => {
            const m = messages.slice(from).find(pred);
            if (m) { waiters.delete(check); clearTimeout(t); res(m); return true; }
            if (closed) { waiters.delete(check); clearTimeout(t); rej(new Error(`${what}: the socket closed (${closed})`)); return true; }
            return false;
          };
          const t = setTimeout(() => {
            waiters.delete(check);
            rej(new Error(`${what} within ${timeoutMs / 1000} s; received: ${messages.map((x) => JSON.stringify(x)).join(' ').slice(-1500)}`));
          }, timeoutMs);
          if (!check()) waiters.add(check);
        });
      },
      close() {
        if (!closed && !sock.destroyed) sock.write(frame(0x8, Buffer.from([0x03, 0xe8])));
        sock.end();
      },
    };
    sock.setNoDelay(true);
    sock.on('connect', () => {
      sock.write(`GET /ws?${qs} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (!open) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        buf = buf.subarray(end + 4);
        const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
        if (!/^HTTP\/1\.1 101/.test(head) || !head.toLowerCase().includes(accept.toLowerCase())) {
          reject(new Error(`no WebSocket upgrade: ${head.split('\r\n')[0]}`));
          sock.destroy();
          return;
        }
        open = true;
        resolve(peer);
      }
      for (;;) {
        if (buf.length < 2) return;
        const op = buf[0] & 0x0f;
        let len = buf[1] & 0x7f;
        let off = 2;
        if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
        else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
        if (buf.length < off + len) return;
        const payload = buf.subarray(off, off + len);
        buf = buf.subarray(off + len);
        if (op === 0x1) {
          try { messages.push(JSON.parse(payload.toString('utf8'))); } catch { messages.push({ nonJson: payload.toString('utf8') }); }
          wake();
        } else if (op === 0x9) {
          sock.write(frame(0xa, payload));
        } else if (op === 0x8) {
          closed = `close frame ${payload.length >= 2 ? payload.readUInt16BE(0) : ''}`;
          wake();
          sock.end();
        }
      }
    });
    sock.on('error', (e) => { if (!open) reject(e); closed = closed || e.message; wake(); });
    sock.on('close', () => { closed = closed || 'socket closed'; wake(); });
  });
}

function frame(op, payload) {
  const mask = randomBytes(4);
  let head;
  if (payload.length < 126) head = Buffer.from([0x80 | op, 0x80 | payload.length]);
  else if (payload.length < 65536) { head = Buffer.alloc(4); head[0] = 0x80 | op; head[1] = 0x80 | 126; head.writeUInt16BE(payload.length, 2); }
  else { head = Buffer.alloc(10); head[0] = 0x80 | op; head[1] = 0x80 | 127; head.writeBigUInt64BE(BigInt(payload.length), 2); }
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4];
  return Buffer.concat([head, mask, body]);
}

// ------------------------------------------------------------------ a host name for loopback
/**
 * An HTTP proxy on 127.0.0.1 that sends requests for `hostName` (any port) to 127.0.0.1 on the
 * same port and refuses every other host. MiniBrowser started with --proxy=<url> then opens
 * http://<hostName>:PORT/ from the daemon on loopback, as a page of that name: not localhost,
 * so not a secure context. (WebKitGTK has no host-resolver flag like Chromium's, and a
 * loopback-only namespace has no DNS; /etc/hosts is the machine's, not ours to change.)
 * Plain requests, WebSocket upgrades in absolute form and CONNECT tunnels are all handled.
 */
export function hostProxy(hostName) {
  const target = (hostHeader) => {
    const m = /^\[?([^\]]+?)\]?(?::(\d+))?$/.exec(hostHeader || '');
    if (!m || m[1].toLowerCase() !== hostName) return null;
    return Number(m[2] || 80);
  };
  const seen = [];
  const server = http.createServer((req, res) => {
    let u;
    try { u = new URL(req.url); } catch { res.writeHead(400).end('absolute URL expected'); return; }
    const port = target(u.host);
    seen.push(`${req.method} ${req.url}`);
    if (!port) { res.writeHead(502).end(`this proxy only knows ${hostName}`); return; }
    const up = http.request({ host: '127.0.0.1', port, method: req.method, path: u.pathname + u.search, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode, ur.headers);
      ur.pipe(res);
    });
    up.on('error', (e) => { res.writeHead(502).end(e.message); });
    req.pipe(up);
  });
  const tunnel = (client, port, head, first) => {
    const up = net.connect(port, '127.0.0.1', () => {
      if (first) up.write(first);
      if (head && head.length) up.write(head);
      up.pipe(client);
      client.pipe(up);
    });
    up.on('error', () => client.destroy());
    client.on('error', () => up.destroy());
  };
  server.on('connect', (req, client, head) => {
    seen.push(`CONNECT ${req.url}`);
    const port = target(req.url);
    if (!port) { client.end('HTTP/1.1 502 Bad Gateway\r\n\r\n'); return; }
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    tunnel(client, port, head, null);
  });
  server.on('upgrade', (req, client, head) => {
    let u;
    try { u = new URL(req.url); } catch { client.destroy(); return; }
    seen.push(`UPGRADE ${req.url}`);
    const port = target(u.host);
    if (!port) { client.end('HTTP/1.1 502 Bad Gateway\r\n\r\n'); return; }
    let text = `${req.method} ${u.pathname}${u.search} HTTP/1.1\r\n`;
    for (let i = 0; i < req.rawHeaders.length; i += 2) text += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
    tunnel(client, port, head, `${text}\r\n`);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({
      url: `http://127.0.0.1:${server.address().port}`,
      seen,
      close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
    }));
  });
}
