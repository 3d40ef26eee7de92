// Plumbing shared by the three pages (index.html → app.js, door.html → door.js, room.html → room.js):
// browser storage and the per-browser token, the status line, secure-context checks,
// getUserMedia, tab coordination, and the client of intercomd's signaling socket /ws (see
// SPEC.md) with reconnect backoff, keepalive and an outbox for directed messages while it is down.
// A classic script: it defines the one global SignalKit and is loaded before the page's script.
'use strict';

const SignalKit = (() => {
  const ID_RE = /^[A-Za-z0-9._~-]{1,64}$/;     // ids and rooms (SPEC.md)
  const LS_TOKEN = 'intercom.token';           // one token per browser, shared by every page
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const KEEPALIVE_CHECK_MS = 5000;
  const KEEPALIVE_IDLE_MS = 25000;             // nothing heard for this long: probe the server
  const KEEPALIVE_TIMEOUT_MS = 10000;          // probe unanswered for this long: reconnect
  const MAX_OUTBOX = 256;                      // directed messages kept while the socket is down
  // Errors after which the server closes the socket; the close that follows decides what to show.
  const FATAL = new Set(['id-taken', 'invalid-id', 'invalid-room', 'invalid-token', 'server-full', 'room-full']);

  // ---------------------------------------------------------------- storage
  function load(key) { try { return localStorage.getItem(key); } catch (_) { return null; } }
  function store(key, value) { try { localStorage.setItem(key, value); } catch (_) { /* private mode */ } }

  function randomHex(bytes) {
    const a = new Uint8Array(bytes);
    crypto.getRandomValues(a); // available in insecure contexts too
    return Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // With the token, a reload (or a second tab) takes its id back instead of getting id-taken.
  let token = load(LS_TOKEN);
  if (!token || !/^[0-9a-f]{32}$/.test(token)) {
    token = randomHex(16);
    store(LS_TOKEN, token);
  }

  // ---------------------------------------------------------------- status line, connection pill
  // setStatus(text, level = info | ok | warn | error, action = {label, fn} for the button, or null).
  function statusLine({ box, text, button, tag }) {
    let action = null;
    button.addEventListener('click', () => { const a = action; if (a) a.fn(); });
    return function setStatus(value, level = 'info', act = null) {
      text.textContent = value;
      box.dataset.level = level;
      action = act;
      button.hidden = !act;
      if (act) button.textContent = act.label;
      if (level === 'error') console.warn(tag, value);
    };
  }

  function showConn(pill, c) {
    document.body.dataset.conn = c;
    pill.textContent = c === 'connected' ? 'online' : (c === 'connecting' ? 'connecting…' : 'offline');
    pill.dataset.level = c === 'connected' ? 'ok' : (c === 'connecting' || c === 'reconnecting' ? 'warn' : 'off');
  }

  // ---------------------------------------------------------------- secure context, media
  function mediaAvailable() {
    return window.isSecureContext !== false && !!navigator.mediaDevices &&
      typeof navigator.mediaDevices.getUserMedia === 'function';
  }
  // Where the https page is. Only a page that is not a secure context asks the daemon, once, at
  // load (GET /api/https: {port, ca, caFingerprint}); until it answers, or if it cannot, the
  // address uses the daemon's default https port 8443.
  const DEFAULT_HTTPS_PORT = 8443;
  const HTTPS_INFO_TIMEOUT_MS = 4000;
  // known: the daemon answered; port: its https port or null (no HTTPS listener); ca: the path
  // of its local CA's certificate or null (no CA of its own, or unknown).
  const https = { known: false, port: DEFAULT_HTTPS_PORT, ca: null, caFingerprint: null, onboard: null };
  const httpsReady = window.isSecureContext === false ? loadHttpsInfo() : Promise.resolve(https);

  async function loadHttpsInfo() {
    const ctl = typeof AbortController === 'function' ? new AbortController() : null;
    const timer = setTimeout(() => { if (ctl) ctl.abort(); }, HTTPS_INFO_TIMEOUT_MS);
    try {
      const r = await fetch('/api/https', { cache: 'no-store', signal: ctl ? ctl.signal : undefined });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const info = await r.json();
      const port = info && info.port;
      https.port = Number.isInteger(port) && port > 0 && port < 65536 ? port : null;
      https.ca = info && typeof info.ca === 'string' && info.ca ? info.ca : null;
      https.caFingerprint = info && typeof info.caFingerprint === 'string' ? info.caFingerprint : null;
      https.onboard = info && typeof info.onboard === 'string' && info.onboard ? info.onboard : null;
      https.known = true;
    } catch (e) {
      console.warn('[signal]', `cannot read /api/https (${e && e.message}): assuming https port ${DEFAULT_HTTPS_PORT}`);
    } finally {
      clearTimeout(timer);
    }
    return https;
  }

  // The https address of this page (the query keeps ?room= on the way), or null without an HTTPS listener.
  function httpsHint() {
    if (https.port === null) return null;
    // location.hostname keeps the brackets of an IPv6 address.
    return `https://${location.hostname}:${https.port}${location.pathname}${location.search}`;
  }
  // What to do instead.
  function httpsAdvice() {
    const url = httpsHint();
    if (!url) {
      return 'This intercom has no HTTPS listener, so the microphone works only on the machine that runs it ' +
        '(opened as localhost) or behind an HTTPS proxy.';
    }
    return https.known ? `Open the https address of this intercom instead: ${url}`
      : `Open the https address of this intercom instead (by default ${url}).`;
  }
  const INSECURE = 'This page is not in a secure context, so the browser blocks the microphone and camera: ' +
    'browsers allow them only over https or on localhost.';
  function insecureText() { return `${INSECURE} ${httpsAdvice()}`; }
  // The links that go with the text: the https page, and the page that installs the local CA.
  function secureLinks() {
    const box = document.createElement('span');
    box.className = 'secure-links';
    const url = httpsHint();
    if (url) {
      const a = document.createElement('a');
      a.href = url;
      a.textContent = 'Open the secure page';
      a.dataset.testid = 'https-link';
      box.append(a);
    }
    if (https.ca) {
      const t = document.createElement('a');
      t.href = 'trust.html';
      t.textContent = 'Trust this intercom on this device';
      t.dataset.testid = 'trust-link';
      box.append(t);
    }
    const scan = onboardUrl();
    if (scan && typeof onboardQr === 'function') box.append(onboardQr(scan, 'Set up a phone: scan this with its camera'));
    return box;
  }
  // Where a phone that scans this page's code goes: the daemon's address for it (the trust page,
  // which goes on by itself once the phone trusts the intercom), coming back to this page after.
  function onboardUrl() {
    if (!https.onboard) return null;
    const here = location.pathname + location.search;
    if (/\/trust\.html\?onboard$/.test(https.onboard)) {
      return here === '/' ? https.onboard : `${https.onboard}=${encodeURIComponent(here)}`;
    }
    return new URL(here, https.onboard).href;
  }
  // WebRTC itself: a browser can be a secure context with a microphone and still have no
  // RTCPeerConnection (WebKitGTK built without it, some privacy settings).
  function webrtcAvailable() { return typeof RTCPeerConnection === 'function'; }
  const NO_WEBRTC = 'This browser cannot make WebRTC calls (it has no RTCPeerConnection), so it can neither ' +
    'call nor answer here. Open this page in a current Chrome, Edge, Firefox or Safari.';
  // Fills the page's warning box (hidden otherwise) when calls cannot work here: not a secure
  // context (once the daemon said where its https page is; extra goes with that case only), or
  // no WebRTC at all.
  function showBrowserWarning(box, extra = '') {
    if (mediaAvailable() && webrtcAvailable()) return Promise.resolve(false);
    if (mediaAvailable()) {
      box.textContent = NO_WEBRTC;
      box.hidden = false;
      return Promise.resolve(true);
    }
    return httpsReady.then(() => {
      const text = document.createElement('span');
      text.className = 'secure-text';
      text.textContent = `${INSECURE} ${extra ? `${extra.trim()} ` : ''}${httpsAdvice()}`;
      box.replaceChildren(text, secureLinks());
      box.hidden = false;
      return true;
    });
  }

  const AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  const VIDEO = { facingMode: 'user', width: { ideal: 640 }, height: { ideal: 480 } };
  // No camera, a busy one or impossible constraints: go on with the microphone alone.
  const NO_CAMERA = ['NotFoundError', 'NotReadableError', 'OverconstrainedError'];

  // Microphone ('audio') or microphone and camera ('video'). A video request that fails with one of
  // audioOnlyOn retries with audio alone and calls onAudioOnly(); any other error is thrown.
  async function getMedia(media, { video = VIDEO, audioOnlyOn = NO_CAMERA, onAudioOnly = () => {} } = {}) {
    if (!mediaAvailable()) {
      const e = new Error('not a secure context');
      e.name = 'InsecureContext';
      throw e;
    }
    if (media !== 'video') return navigator.mediaDevices.getUserMedia({ audio: AUDIO, video: false });
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: AUDIO, video });
    } catch (e) {
      if (!(e && audioOnlyOn.includes(e.name))) throw e;
    }
    const s = await navigator.mediaDevices.getUserMedia({ audio: AUDIO, video: false });
    onAudioOnly();
    return s;
  }

  // what: 'microphone' or 'microphone and camera'; then: what to do after allowing it.
  function mediaErrorText(e, what = 'microphone', then = 'try again') {
    switch (e && e.name) {
      case 'InsecureContext': return insecureText();
      case 'NotAllowedError':
      case 'PermissionDeniedError':
      case 'SecurityError':
        return `Access to the ${what} was denied. Allow it for this site in the browser settings ` +
          `(the lock or camera icon next to the address), then ${then}.`;
      case 'NotFoundError': return `No ${what} was found on this device.`;
      case 'NotReadableError': return `The ${what} is in use by another application or could not be started.`;
      default: return `Could not start the ${what}: ${e && e.name ? e.name + ': ' : ''}${e && e.message ? e.message : e}`;
    }
  }

  function stopStream(s) { if (s) for (const t of s.getTracks()) t.stop(); }

  // ---------------------------------------------------------------- other tabs
  // Tabs of one browser share the token, so a tab that went online under a name another tab
  // uses would take it over (close code 4001). Pages ask the other tabs first: this answers
  // for names owns(name) says are ours, and returns usedElsewhere(name) → Promise<boolean>.
  function tabNames(owns) {
    const tabId = randomHex(8); // so that a page does not answer its own question
    let tabs = null;
    try { tabs = new BroadcastChannel('intercom'); } catch (_) { /* old browser */ }
    if (tabs) {
      tabs.onmessage = (ev) => {
        const m = ev.data || {};
        if (m.q === 'who' && m.tab !== tabId && m.name && owns(m.name)) tabs.postMessage({ a: 'mine', name: m.name });
      };
    }
    return function usedElsewhere(name) {
      if (!tabs) return Promise.resolve(false);
      return new Promise((resolve) => {
        const probe = new BroadcastChannel('intercom');
        const done = (used) => { clearTimeout(timer); probe.close(); resolve(used); };
        const timer = setTimeout(() => done(false), 250);
        probe.onmessage = (ev) => { if (ev.data && ev.data.a === 'mine' && ev.data.name === name) done(true); };
        probe.postMessage({ q: 'who', name, tab: tabId });
      });
    };
  }

  // ---------------------------------------------------------------- signaling socket
  // One client per page. The page keeps its UI; the client tells it what happens:
  //   tag                console prefix
  //   query()            {id, room?} to connect with (the token is added), or null: do not connect
  //   serverWord         how status texts name the daemon ('server' or 'intercom')
  //   connectingText()   status while the first attempt connects
  //   retryText(text, s) status while waiting s seconds to reconnect after text
  //   setConn(c)         'connecting' | 'reconnecting' (the page itself sets connected, closed, disconnected)
  //   setStatus(text, level, action)
  //   onWelcome(msg)     after the client took peers, iceServers and the backoff reset from it;
  //                      what was queued while down is sent after it returns (see clearOutbox)
  //   onPeerJoined(id), onPeerLeft(id), onPeers(list)   the room changed (peers below is updated
  //                      first); onPeers, the answer to {type:"peers"}, is optional
  //   onMessage(msg)     a directed message (msg.from is a string)
  //   onNotice(msg)      optional: a message from the daemon itself, without `from`, that the
  //                      client does not handle (door-opened, to a door station); no peer can
  //                      forge one, since the daemon sets `from` on everything a peer sends
  //   onUnreachable(ref) unknown-peer / peer-unavailable: a message of ours was not delivered
  //   onClosed(code, reason, fatal, lastError)  the socket closed; fatal: the code of the fatal
  //                      error before it, if any. Call reconnect(text) to try again later.
  function socket(opts) {
    const h = {
      serverWord: 'server',
      retryText: (text, s) => `${text}: reconnecting in ${s} s…`,
      onPeers: () => {},
      onNotice: () => {},
      ...opts,
    };
    let ws = null;
    let myId = null;
    let peers = new Set();      // other ids in our room
    let iceServers = [];
    let everConnected = false;  // a welcome since the page loaded or the last close(): "Lost the connection", not "Cannot reach"
    let fatalReason = null;     // set by a fatal server error, read when the socket closes
    let lastError = null;       // text of the last server error message
    let attempt = 0;
    let retryTimer = null;
    let retryTick = null;
    let outbox = [];
    let lastRx = 0;
    let probeSentAt = 0;
    let keepaliveTimer = null;

    function url(q) {
      const proto = location.protocol === 'https:' ? 'wss' : 'ws';
      // id, room and token are all of the unreserved alphabet: encodeURIComponent keeps them as they are.
      let query = `id=${encodeURIComponent(q.id)}`;
      if (q.room) query += `&room=${encodeURIComponent(q.room)}`;
      return `${proto}://${location.host}/ws?${query}&token=${encodeURIComponent(token)}`;
    }

    function others(list) {
      return new Set((Array.isArray(list) ? list : []).filter((p) => typeof p === 'string' && p !== myId));
    }

    function clearRetry() {
      clearTimeout(retryTimer); retryTimer = null;
      clearInterval(retryTick); retryTick = null;
    }

    // Forgets the socket without its close event.
    function dropSocket() {
      const s = ws;
      ws = null;
      stopKeepalive();
      if (!s) return;
      s.onopen = s.onmessage = s.onclose = s.onerror = null;
      try { s.close(1000, 'bye'); } catch (_) { /* ignore */ }
    }

    function connect() {
      clearRetry();
      dropSocket();
      const q = h.query();
      if (!q) return;
      fatalReason = null;
      lastError = null;
      h.setConn(attempt > 0 ? 'reconnecting' : 'connecting');
      if (attempt === 0) h.setStatus(h.connectingText());
      let s;
      try {
        s = new WebSocket(url(q));
      } catch (e) {
        reconnect(`Cannot open a connection to the ${h.serverWord} (${e.message})`);
        return;
      }
      ws = s;
      s.onopen = () => { lastRx = Date.now(); probeSentAt = 0; startKeepalive(); };
      s.onmessage = (ev) => { if (s === ws) onText(ev.data); };
      s.onerror = () => { /* a close event follows */ };
      s.onclose = (ev) => {
        if (s !== ws) return;
        ws = null;
        closed(ev.code, ev.reason);
      };
    }

    function closed(code, reason) {
      stopKeepalive();
      peers.clear();
      h.onClosed(code, reason, fatalReason, lastError);
    }

    // Exponential backoff with jitter (80–120 % of the step, kept within 1 s … 30 s), so that a
    // restarted server is not hit by every page at once; the status line counts down.
    function reconnect(text) {
      clearRetry();
      const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(attempt, 10));
      const delay = Math.round(Math.min(BACKOFF_MAX_MS, Math.max(BACKOFF_MIN_MS, base * (0.8 + 0.4 * Math.random()))));
      attempt += 1;
      h.setConn('reconnecting');
      const due = Date.now() + delay;
      const action = { label: 'Retry now', fn: () => connect() };
      const tick = () => {
        const left = Math.max(1, Math.round((due - Date.now()) / 1000));
        h.setStatus(h.retryText(text, left), 'warn', action);
      };
      tick();
      retryTick = setInterval(tick, 1000);
      retryTimer = setTimeout(connect, delay);
    }

    // What a close that the page does not treat itself means, without a final period.
    function closeText(code, fatal) {
      if (code === 4005 || fatal === 'server-full') return 'The intercom server is full';
      if (code === 4006 || fatal === 'room-full') return 'This room is full';
      if (code === 1001) return 'The intercom server is restarting';
      if (code === 4008 || code === 4009) return 'The intercom server dropped this connection';
      if (!everConnected) return 'Cannot reach the intercom server';
      return 'Lost the connection to the intercom server';
    }

    function send(msg) {
      if (ws && ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify(msg));
        return true;
      }
      // Socket down: keep directed signaling until we are back (the server does the same for us).
      if (msg.to && outbox.length < MAX_OUTBOX) outbox.push(msg);
      return false;
    }

    // Keepalive: a socket on a phone that lost Wi-Fi can look open for minutes.
    // When nothing was heard for a while ask the server for the peer list; no answer means reconnect.
    function startKeepalive() {
      stopKeepalive();
      keepaliveTimer = setInterval(checkAlive, KEEPALIVE_CHECK_MS);
    }
    function stopKeepalive() { clearInterval(keepaliveTimer); keepaliveTimer = null; probeSentAt = 0; }
    function probe() { probeSentAt = Date.now(); send({ type: 'peers' }); }
    function checkAlive() {
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      const now = Date.now();
      if (probeSentAt && now - probeSentAt > KEEPALIVE_TIMEOUT_MS) {
        dropSocket();
        closed(1006, 'no answer');
      } else if (!probeSentAt && now - lastRx > KEEPALIVE_IDLE_MS) {
        probe();
      }
    }
    // Back to the page (phone unlocked, tab shown) or the network: check at once instead of waiting.
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState !== 'visible') return;
      if (ws && ws.readyState === WebSocket.OPEN && !probeSentAt && Date.now() - lastRx > KEEPALIVE_CHECK_MS) probe();
      else if (retryTimer) connect();
    });
    window.addEventListener('online', () => { if (retryTimer) connect(); });

    function onText(data) {
      lastRx = Date.now();
      probeSentAt = 0;
      let msg;
      try { msg = JSON.parse(data); } catch (_) { console.warn(h.tag, 'non-JSON from server', data); return; }
      if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
      switch (msg.type) {
        case 'welcome': onWelcome(msg); break;
        case 'peer-joined':
          if (typeof msg.id === 'string' && msg.id !== myId) { peers.add(msg.id); h.onPeerJoined(msg.id); }
          break;
        case 'peer-left':
          if (typeof msg.id === 'string') { peers.delete(msg.id); h.onPeerLeft(msg.id); }
          break;
        case 'peers':
          if (Array.isArray(msg.peers)) { peers = others(msg.peers); h.onPeers(msg.peers); }
          break;
        case 'error': onError(msg); break;
        default:
          if (typeof msg.from === 'string') h.onMessage(msg);
          else if (!('from' in msg)) h.onNotice(msg);
      }
    }

    function onWelcome(msg) {
      everConnected = true;
      attempt = 0;
      clearRetry();
      myId = typeof msg.id === 'string' ? msg.id : h.query().id;
      peers = others(msg.peers);
      // The daemon's welcome always lists the STUN servers (the same list as /api/ice-servers).
      if (Array.isArray(msg.iceServers)) iceServers = msg.iceServers;
      h.onWelcome(msg);
      const queued = outbox;
      outbox = [];
      for (const m of queued) send(m);
    }

    function onError(msg) {
      const code = String(msg.code || 'error');
      const text = typeof msg.message === 'string' && msg.message ? msg.message : code;
      const ref = msg.ref && typeof msg.ref === 'object' ? msg.ref : {};
      lastError = text;
      if (FATAL.has(code)) {
        fatalReason = code;
      } else if (code === 'unknown-peer' || code === 'peer-unavailable') {
        h.onUnreachable(ref);
      } else if (code === 'rate-limited') {
        h.setStatus(`Sending too fast: the ${h.serverWord} dropped a message.`, 'warn');
      } else if (ref.type !== 'peers') { // an error answering the keepalive probe still says the socket is alive
        const word = h.serverWord[0].toUpperCase() + h.serverWord.slice(1);
        h.setStatus(`${word} error (${code}): ${text}`, 'error');
      }
    }

    const api = {
      /** Connects afresh (backoff reset): going online, or taking the id back after close code 4001. */
      start() { attempt = 0; connect(); },
      /** Goes offline for good: no reconnect, nothing queued. */
      close() {
        clearRetry();
        dropSocket();
        outbox = [];
        attempt = 0;
        everConnected = false;
        peers.clear();
      },
      send,
      reconnect,
      closeText,
      /** Drops what was queued while the socket was down (before onWelcome returns: nothing is sent). */
      clearOutbox() { outbox = []; },
      /** Debug: close the socket as a network drop would (the page reconnects). */
      interrupt() { if (ws) ws.close(); },
      get peers() { return peers; },
      get iceServers() { return iceServers; },
    };
    return api;
  }

  return {
    ID_RE, load, store, randomHex, statusLine, showConn, token: () => token,
    mediaAvailable, webrtcAvailable, NO_WEBRTC, insecureText, httpsHint, httpsReady, secureLinks, showBrowserWarning, getMedia, mediaErrorText, stopStream,
    tabNames, socket,
  };
})();
