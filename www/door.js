// Door station (kiosk) page: one big button that rings a peer or the whole room, and
// automatic answering of calls from the intercom pages. Plain JavaScript, no build step.
// Speaks the call protocol of app.js over intercomd's /ws (see SPEC.md):
//   call-request {call, media[, ring:"room"]} → call-accept | call-reject {reason}
//   → offer / answer / candidate (trickle) → hangup {reason}
// A room-wide ring is one call-request to "*" with ring:"room"; the first call-accept wins,
// every other rung peer gets hangup {reason:"answered-elsewhere", answeredBy}; cancelling or
// timing out sends one hangup to "*".
'use strict';

(() => {
  // ---------------------------------------------------------------- constants
  const ID_RE = /^[A-Za-z0-9._~-]{1,64}$/;
  const LS_TOKEN = 'intercom.token';   // shared with app.js: one token per browser
  const LS_CONFIG = 'intercom.door';   // {id, room, call} from the setup form
  const RING_TIMEOUT_MS = 30000;       // nobody accepted within this: "No answer"
  const CONNECT_TIMEOUT_MS = 30000;    // accepted, but no media connection within this
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const KEEPALIVE_IDLE_MS = 25000;     // nothing heard for this long: probe the server
  const KEEPALIVE_TIMEOUT_MS = 10000;  // probe unanswered for this long: reconnect
  const RESULT_SHOW_MS = 12000;        // how long "No answer" / "Busy" stays on the ready screen
  const MAX_OUTBOX = 256;
  const MAX_PENDING_CANDIDATES = 256;

  // ---------------------------------------------------------------- elements
  const $ = (id) => document.getElementById(id);
  const el = {
    me: $('me'), conn: $('conn'), notices: $('notices'),
    setup: $('setup'), setupForm: $('setup-form'), setupId: $('setup-id'), setupRoom: $('setup-room'),
    setupCall: $('setup-call'), setupError: $('setup-error'),
    ready: $('ready'), result: $('result'), ringBtn: $('ring-btn'), ringLabel: $('ring-label'), ringTarget: $('ring-target'),
    call: $('call'), remoteVideo: $('remote-video'), localVideo: $('local-video'),
    placeholder: $('remote-placeholder'), avatar: $('avatar'),
    headline: $('headline'), subline: $('subline'), message: $('message'), hangupBtn: $('hangup-btn'),
    statusText: $('status-text'), retryBtn: $('retry-btn'),
    remoteAudio: $('remote-audio'), soundOverlay: $('sound-overlay'), enableSoundBtn: $('enable-sound-btn'),
  };

  // ---------------------------------------------------------------- storage, config
  function load(key) { try { return localStorage.getItem(key); } catch (_) { return null; } }
  function store(key, value) { try { localStorage.setItem(key, value); } catch (_) { /* private mode */ } }

  function randomHex(bytes) {
    const a = new Uint8Array(bytes);
    crypto.getRandomValues(a);
    return Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  let token = load(LS_TOKEN);
  if (!token || !/^[0-9a-f]{32}$/.test(token)) {
    token = randomHex(16);
    store(LS_TOKEN, token);
  }

  // Returns {id, room, call} or {error} for a bad value; call '*' = the whole room.
  function checkConfig(id, room, target) {
    id = (id || '').trim();
    room = (room || '').trim() || 'lobby';
    target = (target || '').trim() || '*';
    if (!ID_RE.test(id)) return { error: `“${id}” cannot be a station name: use 1–64 letters, digits or . _ ~ -` };
    if (!ID_RE.test(room)) return { error: `“${room}” cannot be a room name: use 1–64 letters, digits or . _ ~ -` };
    if (target !== '*' && !ID_RE.test(target)) return { error: `“${target}” cannot be a name to ring: use 1–64 letters, digits or . _ ~ -, or leave it empty for everyone` };
    if (target === id) return { error: 'The button cannot ring the door station itself.' };
    return { id, room, call: target };
  }

  const params = new URLSearchParams(location.search);
  function storedConfig() {
    try {
      const c = JSON.parse(load(LS_CONFIG) || 'null');
      if (!c || typeof c !== 'object') return null;
      const checked = checkConfig(c.id, c.room, c.call);
      return checked.error ? null : checked;
    } catch (_) { return null; }
  }

  // ---------------------------------------------------------------- state
  const app = {
    conn: 'disconnected', // disconnected | connecting | connected | reconnecting | closed
    state: 'starting',    // starting | setup | offline | ready | ringing | answering | in-call | error
    config: null,         // {id, room, call}
    myId: null,
    room: null,
    peers: new Set(),
    iceServers: [],
  };
  let ws = null;
  // { id, role: 'caller'|'callee', group, peer (null until someone accepts a room ring), targets: Set,
  //   replies: Map peer→reason, media, pc, dc, localStream, remoteStream, pending, timer, signaled, connected }
  let call = null;

  function setState(s) {
    app.state = s;
    document.body.dataset.state = s;
    el.setup.hidden = s !== 'setup';
    el.ready.hidden = !(s === 'ready' || s === 'offline' || s === 'starting');
    el.call.hidden = !(s === 'ringing' || s === 'answering' || s === 'in-call');
    renderReady();
  }

  function idleState() { return app.conn === 'connected' ? 'ready' : 'offline'; }

  function setConn(c) {
    app.conn = c;
    document.body.dataset.conn = c;
    el.conn.textContent = c === 'connected' ? 'online' : (c === 'connecting' ? 'connecting…' : 'offline');
    el.conn.dataset.level = c === 'connected' ? 'ok' : (c === 'connecting' || c === 'reconnecting' ? 'warn' : 'off');
    if (!call && (app.state === 'ready' || app.state === 'offline' || app.state === 'starting')) setState(idleState());
    else renderReady();
  }

  function targetText() {
    const t = app.config && app.config.call;
    return !t || t === '*' ? 'everyone' : t;
  }

  function renderReady() {
    const online = app.conn === 'connected';
    el.ringBtn.disabled = !(online && app.state === 'ready');
    el.ringLabel.textContent = online ? 'Press to ring' : (app.conn === 'connecting' ? 'Connecting…' : 'Offline');
    el.ringTarget.textContent = online ? `Calls ${targetText()}` : 'Waiting for the intercom';
  }

  // ---------------------------------------------------------------- status line, notices, results
  let statusAction = null;
  function setStatus(text, level = 'info', action = null) {
    el.statusText.textContent = text;
    el.statusText.parentElement.dataset.level = level;
    statusAction = action;
    el.retryBtn.hidden = !action;
    if (action) el.retryBtn.textContent = action.label;
    if (level === 'error') console.warn('[door]', text);
  }
  el.retryBtn.addEventListener('click', () => { const a = statusAction; if (a) a.fn(); });

  // Notices: persistent problems (insecure page, camera blocked, id taken, sound blocked).
  const notices = new Map(); // key → {text, level, action}
  function setNotice(key, text, level = 'error', action = null) {
    if (!text) notices.delete(key); else notices.set(key, { text, level, action });
    const items = [];
    for (const [k, n] of notices) {
      const p = document.createElement('p');
      p.className = 'notice';
      p.dataset.level = n.level;
      p.dataset.testid = `notice-${k}`;
      p.textContent = n.text;
      if (n.action) {
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'small';
        b.dataset.testid = `notice-${k}-action`;
        b.textContent = n.action.label;
        b.addEventListener('click', n.action.fn);
        p.append(' ', b);
      }
      items.push(p);
    }
    el.notices.replaceChildren(...items);
    document.body.dataset.notices = Array.from(notices.keys()).join(' ');
    if (text && level === 'error') console.warn('[door]', text);
  }

  let resultTimer = null;
  // A call's outcome, in big text above the button: no-answer, busy, rejected, offline, nobody, ended, failed, media-error.
  function showResult(kind, text) {
    clearTimeout(resultTimer);
    el.result.textContent = text;
    el.result.dataset.kind = kind;
    el.result.hidden = false;
    document.body.dataset.result = kind;
    resultTimer = setTimeout(clearResult, RESULT_SHOW_MS);
  }
  function clearResult() {
    clearTimeout(resultTimer);
    el.result.hidden = true;
    delete document.body.dataset.result;
  }

  // ---------------------------------------------------------------- secure context, permissions
  function mediaAvailable() {
    return window.isSecureContext !== false && !!navigator.mediaDevices &&
      typeof navigator.mediaDevices.getUserMedia === 'function';
  }
  function insecureText() {
    return 'This page is not in a secure context, so the browser blocks the camera and microphone. ' +
      'Open it as http://localhost:8080/door.html on the machine that runs intercomd, or over https.';
  }

  const deniedText = 'Camera or microphone blocked for this page. Allow them in Chromium ' +
    '(policy AudioCaptureAllowedUrls / VideoCaptureAllowedUrls, or the camera icon in the address bar), then reload.';

  async function checkPermissions() {
    if (!navigator.permissions || !navigator.permissions.query) return;
    const states = {};
    const update = () => {
      const vals = Object.values(states);
      if (vals.includes('denied')) {
        setNotice('permission', deniedText, 'error');
      } else if (vals.includes('prompt')) {
        setNotice('permission', 'Camera and microphone are not granted yet: the first call will ask. ' +
          'Allow them once now so that calls can be answered without a click.', 'warn',
        { label: 'Allow camera and microphone', fn: grantOnce });
      } else {
        setNotice('permission', '');
      }
    };
    for (const name of ['camera', 'microphone']) {
      try {
        const st = await navigator.permissions.query({ name });
        states[name] = st.state;
        st.onchange = () => { states[name] = st.state; update(); };
      } catch (_) { /* this browser cannot tell */ }
    }
    update();
  }
  async function grantOnce() {
    try {
      const s = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      stopStream(s);
      setNotice('permission', '');
    } catch (e) {
      setNotice('permission', mediaErrorText(e), 'error', { label: 'Try again', fn: grantOnce });
    }
  }

  // ---------------------------------------------------------------- sound: tones, autoplay
  let audioCtx = null;
  let tone = null;
  function ensureAudioCtx() {
    try {
      if (!audioCtx) {
        const AC = window.AudioContext || window.webkitAudioContext;
        if (!AC) return null;
        audioCtx = new AC();
      }
      if (audioCtx.state === 'suspended') audioCtx.resume().catch(() => {});
    } catch (_) { return null; }
    return audioCtx;
  }
  function startRingback() {
    stopTone();
    const ctx = ensureAudioCtx();
    if (!ctx) return;
    try {
      const gain = ctx.createGain();
      gain.gain.value = 0.12;
      gain.connect(ctx.destination);
      const pattern = () => { // ringback: 1 s tone every 3 s
        const at = ctx.currentTime + 0.05;
        const env = ctx.createGain();
        env.gain.setValueAtTime(0, at);
        env.gain.linearRampToValueAtTime(1, at + 0.03);
        env.gain.setValueAtTime(1, at + 0.95);
        env.gain.linearRampToValueAtTime(0, at + 1.0);
        env.connect(gain);
        const o = ctx.createOscillator();
        o.frequency.value = 440;
        o.connect(env);
        o.start(at);
        o.stop(at + 1.0);
      };
      pattern();
      tone = { gain, timer: setInterval(pattern, 3000) };
    } catch (e) { console.warn('[door] tone failed', e); }
  }
  function stopTone() {
    if (!tone) return;
    clearInterval(tone.timer);
    try { tone.gain.disconnect(); } catch (_) { /* ignore */ }
    tone = null;
  }

  // Autoplay: without --autoplay-policy=no-user-gesture-required Chromium keeps sound off until
  // the first tap. Say so on the ready screen; during a call, a full-screen "Tap to enable sound".
  function checkAutoplay() {
    const ctx = ensureAudioCtx();
    if (ctx && ctx.state !== 'running' && !(navigator.userActivation && navigator.userActivation.hasBeenActive)) {
      setNotice('sound', 'Sound is blocked until someone touches the screen once ' +
        '(start the kiosk browser with --autoplay-policy=no-user-gesture-required).', 'warn');
    }
  }
  function onUserGesture() {
    ensureAudioCtx();
    if (notices.has('sound')) setNotice('sound', ''); // one tap unlocks sound for the page's lifetime
    if (!el.soundOverlay.hidden) playRemoteAudio();
  }
  for (const t of ['pointerdown', 'keydown']) document.addEventListener(t, onUserGesture, { capture: true });

  function playRemoteAudio() {
    if (!el.remoteAudio.srcObject) { el.soundOverlay.hidden = true; return; }
    const p = el.remoteAudio.play();
    if (!p || !p.then) return;
    p.then(() => {
      el.soundOverlay.hidden = true;
      document.body.dataset.sound = 'on';
    }).catch((e) => {
      if (e && e.name === 'NotAllowedError') {
        el.soundOverlay.hidden = false;
        document.body.dataset.sound = 'blocked';
        console.warn('[door] remote audio blocked by the autoplay policy: showing "Tap to enable sound"');
      } else if (!(e && e.name === 'AbortError')) {
        console.warn('[door] remote audio did not play', e);
      }
    });
  }
  el.enableSoundBtn.addEventListener('click', () => { ensureAudioCtx(); playRemoteAudio(); });

  // ---------------------------------------------------------------- wake lock
  let wakeLock = null;
  async function keepAwake() {
    if (!('wakeLock' in navigator) || wakeLock || document.visibilityState !== 'visible') return;
    try {
      wakeLock = await navigator.wakeLock.request('screen');
      document.body.dataset.wakelock = 'on';
      wakeLock.addEventListener('release', () => { wakeLock = null; document.body.dataset.wakelock = 'off'; });
    } catch (e) {
      document.body.dataset.wakelock = 'failed';
      console.info('[door] screen wake lock not granted:', e && e.message);
    }
  }

  // ---------------------------------------------------------------- signaling socket
  let everConnected = false;
  let fatalReason = null;
  let lastError = null;
  let retryAttempt = 0;
  let retryTimer = null;
  let retryTick = null;
  let outbox = [];
  let lastRx = 0;
  let probeSentAt = 0;
  let keepaliveTimer = null;

  function wsUrl() {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const c = app.config;
    return `${proto}://${location.host}/ws?id=${encodeURIComponent(c.id)}&room=${encodeURIComponent(c.room)}` +
      `&token=${encodeURIComponent(token)}`;
  }

  function clearRetry() {
    clearTimeout(retryTimer); retryTimer = null;
    clearInterval(retryTick); retryTick = null;
  }

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
    if (!app.config) return;
    fatalReason = null;
    lastError = null;
    setConn(retryAttempt > 0 ? 'reconnecting' : 'connecting');
    if (retryAttempt === 0) setStatus(`Connecting to the intercom as ${app.config.id}…`);
    let s;
    try {
      s = new WebSocket(wsUrl());
    } catch (e) {
      scheduleReconnect(`Cannot open a connection to the intercom (${e.message})`);
      return;
    }
    ws = s;
    s.onopen = () => { lastRx = Date.now(); probeSentAt = 0; startKeepalive(); };
    s.onmessage = (ev) => { if (s === ws) onServerText(ev.data); };
    s.onerror = () => { /* a close event follows */ };
    s.onclose = (ev) => {
      if (s !== ws) return;
      ws = null;
      onSocketClosed(ev.code, ev.reason);
    };
  }

  function send(msg) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(msg));
      return true;
    }
    if (msg.to && outbox.length < MAX_OUTBOX) outbox.push(msg); // sent after the reconnect
    return false;
  }

  function onSocketClosed(code, reason) {
    stopKeepalive();
    app.peers.clear();
    const why = fatalReason;
    if (code === 4000 || why === 'invalid-id' || why === 'invalid-room' || why === 'invalid-token') {
      setConn('closed');
      if (call) endCall('', '', { notify: false });
      const text = lastError || `The intercom refused this station's name, room or token${reason ? ` (${reason})` : ''}.`;
      showSetup(`${text} Fix the settings (or the address) and start again.`);
      return;
    }
    if (code === 4001) {
      // Another window of this browser now holds the id: reconnecting would take it back and forth.
      setConn('closed');
      if (call) endCall('', '', { notify: false });
      setState('offline');
      setStatus('Stopped: this door station was opened in another window or tab.', 'warn',
        { label: 'Use this window', fn: () => { retryAttempt = 0; connect(); } });
      setNotice('replaced', `The name “${app.config.id}” is now used by another window of this browser; this one stopped.`, 'warn');
      return;
    }
    let text;
    if (code === 4002 || why === 'id-taken') {
      // A kiosk keeps trying: the other device may be this station's own dead connection from before a reboot.
      setNotice('id-taken', `The name “${app.config.id}” is in use by another device. ` +
        'This station keeps retrying; give it another name with door.html?setup=1 if the other device stays.', 'error');
      text = `The name “${app.config.id}” is taken`;
    } else if (code === 4005 || why === 'server-full') text = 'The intercom server is full';
    else if (code === 4006 || why === 'room-full') text = 'This room is full';
    else if (code === 1001) text = 'The intercom server is restarting';
    else if (code === 4008 || code === 4009) text = 'The intercom server dropped this connection';
    else if (!everConnected) text = 'Cannot reach the intercom server';
    else text = 'Lost the connection to the intercom server';
    scheduleReconnect(text);
  }

  function scheduleReconnect(text) {
    clearRetry();
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(retryAttempt, 10));
    // jitter: 80–120 % of the step, kept within 1 s … 30 s
    const delay = Math.round(Math.min(BACKOFF_MAX_MS, Math.max(BACKOFF_MIN_MS, base * (0.8 + 0.4 * Math.random()))));
    retryAttempt += 1;
    setConn('reconnecting');
    const due = Date.now() + delay;
    const action = { label: 'Retry now', fn: () => connect() };
    const tick = () => {
      const left = Math.max(1, Math.round((due - Date.now()) / 1000));
      setStatus(`${text}: reconnecting in ${left} s…`, 'warn', action);
    };
    tick();
    retryTick = setInterval(tick, 1000);
    retryTimer = setTimeout(connect, delay);
  }

  function startKeepalive() {
    stopKeepalive();
    keepaliveTimer = setInterval(checkAlive, 5000);
  }
  function stopKeepalive() { clearInterval(keepaliveTimer); keepaliveTimer = null; probeSentAt = 0; }
  function checkAlive() {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const now = Date.now();
    if (probeSentAt && now - probeSentAt > KEEPALIVE_TIMEOUT_MS) {
      dropSocket();
      onSocketClosed(1006, 'no answer');
    } else if (!probeSentAt && now - lastRx > KEEPALIVE_IDLE_MS) {
      probeSentAt = now;
      send({ type: 'peers' });
    }
  }
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible') return;
    keepAwake();
    if (retryTimer) connect();
  });
  window.addEventListener('online', () => { if (retryTimer) connect(); });

  // ---------------------------------------------------------------- server messages
  function onServerText(data) {
    lastRx = Date.now();
    probeSentAt = 0;
    let msg;
    try { msg = JSON.parse(data); } catch (_) { console.warn('[door] non-JSON from server', data); return; }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
    switch (msg.type) {
      case 'welcome': onWelcome(msg); break;
      case 'peer-joined':
        if (typeof msg.id === 'string' && msg.id !== app.myId) { app.peers.add(msg.id); onPeerJoined(msg.id); }
        break;
      case 'peer-left':
        if (typeof msg.id === 'string') { app.peers.delete(msg.id); onPeerLeft(msg.id); }
        break;
      case 'peers':
        if (Array.isArray(msg.peers)) app.peers = new Set(msg.peers.filter((p) => typeof p === 'string' && p !== app.myId));
        break;
      case 'error': onServerError(msg); break;
      default:
        if (typeof msg.from === 'string') onDirected(msg);
    }
  }

  function onWelcome(msg) {
    everConnected = true;
    retryAttempt = 0;
    clearRetry();
    app.myId = typeof msg.id === 'string' ? msg.id : app.config.id;
    app.room = typeof msg.room === 'string' ? msg.room : app.config.room;
    app.peers = new Set((Array.isArray(msg.peers) ? msg.peers : []).filter((p) => typeof p === 'string' && p !== app.myId));
    if (Array.isArray(msg.iceServers)) app.iceServers = msg.iceServers;
    setNotice('id-taken', '');
    setNotice('replaced', '');
    el.me.textContent = `${app.myId} · ${app.room}`;
    setConn('connected');
    if (call) setStatus(`Back online. Still in the call with ${call.peer || targetText()}.`);
    else setReadyStatus();
    const queued = outbox;
    outbox = [];
    for (const m of queued) send(m);
  }

  function setReadyStatus() {
    if (app.conn === 'connected') setStatus(`Online as ${app.myId} in ${app.room}. The button calls ${targetText()}.`, 'ok');
  }

  function onServerError(msg) {
    const code = String(msg.code || 'error');
    const text = typeof msg.message === 'string' && msg.message ? msg.message : code;
    const ref = msg.ref && typeof msg.ref === 'object' ? msg.ref : {};
    lastError = text;
    switch (code) {
      case 'id-taken': case 'invalid-id': case 'invalid-room': case 'invalid-token':
      case 'server-full': case 'room-full':
        fatalReason = code; // the close that follows decides
        return;
      case 'unknown-peer':
      case 'peer-unavailable':
        onUnreachable(ref);
        return;
      case 'rate-limited':
        setStatus('Sending too fast: the intercom dropped a message.', 'warn');
        return;
      default:
        if (ref.type === 'peers') return; // keepalive probe answered by an error: still alive
        setStatus(`Intercom error (${code}): ${text}`, 'error');
    }
  }

  // A directed message could not be delivered to ref.to.
  function onUnreachable(ref) {
    const c = call;
    if (!c || typeof ref.to !== 'string' || ref.type === 'hangup' || ref.type === 'call-reject') return;
    if (c.peer === ref.to && (app.state === 'in-call' || app.state === 'answering')) {
      endCall('ended', `${ref.to} is not reachable any more: the call ended.`, { notify: false });
    } else if (c.role === 'caller' && app.state === 'ringing' && c.targets.has(ref.to)) {
      c.targets.delete(ref.to);
      c.replies.delete(ref.to);
      if (!c.group) endCall('offline', `${ref.to} is not online.`, { notify: false });
      else checkAllReplied(c);
    }
  }

  function onPeerJoined(id) {
    const c = call;
    // Someone came online while the whole room rings: ring them too.
    if (c && c.role === 'caller' && c.group && app.state === 'ringing' && c.signaled && !c.targets.has(id)) {
      c.targets.add(id);
      send({ type: 'call-request', to: id, call: c.id, media: c.media, ring: 'room' });
    }
  }

  function onPeerLeft(id) {
    const c = call;
    if (!c) return;
    if (c.peer === id && app.state !== 'ringing') {
      endCall('ended', `${id} went offline: the call ended.`, { notify: false });
    } else if (c.role === 'caller' && app.state === 'ringing' && c.targets.has(id)) {
      c.targets.delete(id);
      c.replies.delete(id);
      if (!c.group) endCall('offline', `${id} went offline.`, { notify: false });
      else checkAllReplied(c);
    }
  }

  // ---------------------------------------------------------------- media
  async function getMedia(media) {
    if (!mediaAvailable()) {
      const e = new Error('not a secure context');
      e.name = 'InsecureContext';
      throw e;
    }
    const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    if (media !== 'video') return navigator.mediaDevices.getUserMedia({ audio, video: false });
    try {
      return await navigator.mediaDevices.getUserMedia({
        audio, video: { facingMode: 'user', width: { ideal: 640 }, height: { ideal: 480 } },
      });
    } catch (e) {
      if (e && (e.name === 'NotFoundError' || e.name === 'NotReadableError' || e.name === 'OverconstrainedError')) {
        const s = await navigator.mediaDevices.getUserMedia({ audio, video: false });
        setNotice('camera', 'No usable camera: calls are audio only.', 'warn');
        return s;
      }
      throw e;
    }
  }

  function mediaErrorText(e) {
    switch (e && e.name) {
      case 'InsecureContext': return insecureText();
      case 'NotAllowedError': case 'PermissionDeniedError': case 'SecurityError': return deniedText;
      case 'NotFoundError': return 'No microphone was found on this door station.';
      case 'NotReadableError': return 'The camera or microphone is in use by another program or could not be started.';
      default: return `Could not start the camera or microphone: ${e && e.name ? e.name + ': ' : ''}${e && e.message ? e.message : e}`;
    }
  }

  function stopStream(s) { if (s) for (const t of s.getTracks()) t.stop(); }

  function showLocal(c) {
    if (c.localStream && c.localStream.getVideoTracks().length) {
      el.localVideo.srcObject = c.localStream;
      el.localVideo.hidden = false;
      el.localVideo.play().catch(() => { /* muted video; ignore */ });
    }
  }

  // ---------------------------------------------------------------- calls
  function matches(msg) {
    return !!call && !!call.peer && msg.from === call.peer && (!msg.call || !call.id || msg.call === call.id);
  }

  function onDirected(msg) {
    switch (msg.type) {
      case 'call-request': onCallRequest(msg); break;
      case 'call-accept': onCallAccept(msg); break;
      case 'call-reject': onCallReject(msg); break;
      case 'offer': onOffer(msg); break;
      case 'answer': onAnswer(msg); break;
      case 'candidate': onCandidate(msg); break;
      case 'hangup': onHangup(msg); break;
      default: break;
    }
  }

  function newCall(fields) {
    return {
      id: null, role: 'caller', group: false, peer: null, targets: new Set(), replies: new Map(),
      media: 'video', pc: null, dc: null, localStream: null, remoteStream: null, pending: [],
      timer: null, signaled: false, connected: false, ...fields,
    };
  }

  function showCallScreen(c, headline, subline) {
    el.headline.textContent = headline;
    el.subline.textContent = subline;
    el.avatar.textContent = c.peer ? c.peer.slice(0, 1).toUpperCase() : '';
    el.message.hidden = true;
    el.message.textContent = '';
    document.body.dataset.media = c.media;
  }

  // The big button: ring the configured peer, or every peer of the room.
  async function ring() {
    if (call || app.state !== 'ready' || app.conn !== 'connected') return;
    ensureAudioCtx(); // the press is a user gesture: unlock sound
    clearResult();
    const group = app.config.call === '*';
    if (group && app.peers.size === 0) {
      showResult('nobody', 'Nobody is online to answer');
      return;
    }
    const c = call = newCall({ id: randomHex(8), role: 'caller', group, peer: group ? null : app.config.call, media: 'video' });
    showCallScreen(c, 'Ringing…', group ? 'Calling everyone' : `Calling ${c.peer}`);
    el.hangupBtn.textContent = 'Cancel';
    setState('ringing');
    setStatus(group ? `Ringing everyone in ${app.room}…` : `Ringing ${c.peer}…`);
    let stream;
    try {
      stream = await getMedia(c.media);
    } catch (e) {
      if (call === c) {
        endCall('media-error', 'Camera or microphone not available', { notify: false });
        setNotice('permission', mediaErrorText(e), 'error');
      }
      return;
    }
    if (call !== c) { stopStream(stream); return; } // cancelled meanwhile
    c.localStream = stream;
    if (!stream.getVideoTracks().length) c.media = 'audio';
    showLocal(c);
    const req = { type: 'call-request', call: c.id, media: c.media };
    if (group) {
      c.targets = new Set(app.peers);
      if (c.targets.size === 0) { endCall('nobody', 'Nobody is online to answer', { notify: false }); return; }
      send({ ...req, to: '*', ring: 'room' });
    } else {
      c.targets = new Set([c.peer]);
      send({ ...req, to: c.peer });
    }
    c.signaled = true;
    startRingback();
    c.timer = setTimeout(() => {
      if (call === c && app.state === 'ringing') endCall('no-answer', 'No answer', { notify: true, reason: 'no-answer' });
    }, RING_TIMEOUT_MS);
  }

  async function onCallAccept(msg) {
    const c = call;
    if (!c || c.role !== 'caller' || !c.signaled || msg.call !== c.id) return;
    if (app.state !== 'ringing') {
      // Someone else was quicker: release this one.
      if (c.group && msg.from !== c.peer) {
        send({ type: 'hangup', to: msg.from, call: c.id, reason: 'answered-elsewhere', answeredBy: c.peer });
      }
      return;
    }
    if (!c.targets.has(msg.from)) return;
    c.peer = msg.from;
    clearTimeout(c.timer);
    stopTone();
    if (c.group) {
      for (const p of c.targets) {
        if (p !== c.peer) send({ type: 'hangup', to: p, call: c.id, reason: 'answered-elsewhere', answeredBy: c.peer });
      }
    }
    if (!createPeerConnection(c)) return;
    setupDataChannel(c, c.pc.createDataChannel('chat'));
    enterCall(c);
    try {
      const offer = await c.pc.createOffer();
      if (call !== c) return;
      await c.pc.setLocalDescription(offer);
      if (call !== c) return;
      send({ type: 'offer', to: c.peer, call: c.id, sdp: c.pc.localDescription.sdp });
    } catch (e) {
      if (call === c) failCall(`Could not create an offer (${e.message}).`);
    }
  }

  function onCallReject(msg) {
    const c = call;
    if (!c || c.role !== 'caller' || app.state !== 'ringing' || msg.call !== c.id || !c.targets.has(msg.from)) return;
    c.replies.set(msg.from, typeof msg.reason === 'string' ? msg.reason : 'declined');
    checkAllReplied(c);
  }

  // Every rung peer said no (or left): show why, back to ready.
  function checkAllReplied(c) {
    if (call !== c || app.state !== 'ringing' || !c.signaled) return;
    for (const p of c.targets) if (!c.replies.has(p)) return;
    const reasons = Array.from(c.replies.values());
    const who = c.group ? 'everyone' : c.peer;
    if (reasons.length === 0) endCall('no-answer', 'No answer', { notify: false });
    else if (reasons.includes('busy')) endCall('busy', c.group ? 'Busy — nobody can answer' : `Busy — ${who} is in another call`, { notify: false });
    else if (reasons.every((r) => r === 'no-answer')) endCall('no-answer', 'No answer', { notify: false });
    else endCall('rejected', 'Call rejected', { notify: false });
  }

  function onCallRequest(msg) {
    const from = msg.from;
    const media = msg.media === 'video' ? 'video' : 'audio';
    const callId = typeof msg.call === 'string' ? msg.call : null;
    if (msg.ring === 'room') {
      // A room-wide ring (another door station): a door does not answer those.
      if (!call || call.peer !== from) send({ type: 'call-reject', to: from, call: callId, reason: 'declined' });
      return;
    }
    const c = call;
    if (c) {
      if (c.role === 'callee' && c.peer === from && callId === c.id) return; // duplicate
      if (c.role === 'caller' && app.state === 'ringing') {
        // We ring and someone calls us. If they are one of the rung peers and app.js's glare rule
        // (the smaller id stays the caller) makes them accept our request, wait for that.
        if (c.signaled && c.targets.has(from) && app.myId < from) return;
        // Otherwise give up ringing and answer them: they want the door anyway.
        if (c.signaled) {
          for (const p of c.targets) {
            if (p !== from) send({ type: 'hangup', to: p, call: c.id, reason: 'answered-elsewhere', answeredBy: from });
          }
        }
        call = null;
        clearTimeout(c.timer);
        stopTone();
        stopStream(c.localStream);
        el.localVideo.srcObject = null;
      } else {
        send({ type: 'call-reject', to: from, call: callId, reason: 'busy' });
        return;
      }
    }
    autoAnswer(from, media, callId);
  }

  // Someone calls the door: answer at once with camera and microphone.
  async function autoAnswer(from, media, callId) {
    clearResult();
    const c = call = newCall({ id: callId, role: 'callee', peer: from, media, targets: new Set([from]), signaled: true });
    showCallScreen(c, 'Connecting…', `${from} is calling`);
    el.hangupBtn.textContent = 'Hang up';
    setState('answering');
    setStatus(`Answering the call from ${from}…`);
    let stream;
    try {
      stream = await getMedia(media);
    } catch (e) {
      if (call === c) {
        endCall('media-error', 'Camera or microphone not available', { notify: true, reason: 'media-error' });
        setNotice('permission', mediaErrorText(e), 'error');
      }
      return;
    }
    if (call !== c) { stopStream(stream); return; } // the caller gave up meanwhile
    c.localStream = stream;
    if (!createPeerConnection(c)) return;
    showLocal(c);
    enterCall(c);
    send({ type: 'call-accept', to: from, call: c.id, media });
  }

  async function onOffer(msg) {
    if (!matches(msg) || call.role !== 'callee' || !call.pc) return;
    const c = call;
    const sdp = typeof msg.sdp === 'string' ? msg.sdp : (msg.sdp && msg.sdp.sdp);
    if (typeof sdp !== 'string') return;
    try {
      await c.pc.setRemoteDescription({ type: 'offer', sdp });
      if (call !== c) return;
      flushCandidates(c);
      const answer = await c.pc.createAnswer();
      if (call !== c) return;
      await c.pc.setLocalDescription(answer);
      if (call !== c) return;
      send({ type: 'answer', to: c.peer, call: c.id, sdp: c.pc.localDescription.sdp });
    } catch (e) {
      if (call === c) failCall(`Could not answer the offer (${e.message}).`);
    }
  }

  async function onAnswer(msg) {
    if (!matches(msg) || call.role !== 'caller' || !call.pc) return;
    const c = call;
    const sdp = typeof msg.sdp === 'string' ? msg.sdp : (msg.sdp && msg.sdp.sdp);
    if (typeof sdp !== 'string' || c.pc.signalingState !== 'have-local-offer') return;
    try {
      await c.pc.setRemoteDescription({ type: 'answer', sdp });
      if (call === c) flushCandidates(c);
    } catch (e) {
      if (call === c) failCall(`The answer was not accepted (${e.message}).`);
    }
  }

  function onCandidate(msg) {
    if (!matches(msg) || !msg.candidate || typeof msg.candidate !== 'object') return;
    const c = call;
    if (!c.pc || !c.pc.remoteDescription) {
      if (c.pending.length < MAX_PENDING_CANDIDATES) c.pending.push(msg.candidate);
      return;
    }
    c.pc.addIceCandidate(msg.candidate).catch((e) => console.warn('[door] bad candidate', e));
  }

  function flushCandidates(c) {
    const list = c.pending;
    c.pending = [];
    for (const cand of list) c.pc.addIceCandidate(cand).catch((e) => console.warn('[door] bad candidate', e));
  }

  function onHangup(msg) {
    const c = call;
    if (!c) return;
    if (c.role === 'caller' && app.state === 'ringing') {
      // A rung peer hung up instead of rejecting: count it as a no.
      if (msg.call === c.id && c.targets.has(msg.from)) {
        c.replies.set(msg.from, typeof msg.reason === 'string' ? msg.reason : 'declined');
        checkAllReplied(c);
      }
      return;
    }
    if (!matches(msg)) return;
    if (msg.reason === 'failed') endCall('failed', 'Call failed', { notify: false });
    else endCall('ended', 'Call ended', { notify: false });
  }

  function createPeerConnection(c) {
    let pc;
    try {
      pc = new RTCPeerConnection({ iceServers: app.iceServers });
    } catch (e) {
      console.warn('[door] ICE server list refused, using none', e);
      try { pc = new RTCPeerConnection({ iceServers: [] }); } catch (e2) {
        failCall(`This browser cannot make WebRTC calls (${e2.message}).`);
        return false;
      }
    }
    c.pc = pc;
    for (const t of c.localStream.getTracks()) pc.addTrack(t, c.localStream);
    pc.onicecandidate = (e) => {
      if (e.candidate && call === c) send({ type: 'candidate', to: c.peer, call: c.id, candidate: e.candidate.toJSON() });
    };
    pc.ontrack = (e) => { if (call === c) addRemoteTrack(c, e.track); };
    pc.ondatachannel = (e) => { if (call === c) setupDataChannel(c, e.channel); };
    pc.oniceconnectionstatechange = () => { if (call === c) onIceState(c); };
    pc.onconnectionstatechange = () => {
      if (call === c && pc.connectionState === 'failed') failCall(`No media connection to ${c.peer} could be established.`);
    };
    return true;
  }

  function onIceState(c) {
    const s = c.pc.iceConnectionState;
    document.body.dataset.ice = s;
    switch (s) {
      case 'connected':
      case 'completed':
        clearTimeout(c.timer);
        el.headline.textContent = 'Connected — speak now';
        el.subline.textContent = c.peer;
        if (!c.connected) setStatus(`In a call with ${c.peer}.`, 'ok');
        c.connected = true;
        break;
      case 'disconnected':
        el.headline.textContent = 'Connection interrupted…';
        setStatus(`The connection to ${c.peer} is interrupted; trying to recover…`, 'warn');
        break;
      case 'failed':
        failCall(`The media connection to ${c.peer} failed.`);
        break;
      default:
        break;
    }
  }

  function enterCall(c) {
    el.headline.textContent = 'Connecting…';
    el.subline.textContent = c.peer;
    el.avatar.textContent = c.peer.slice(0, 1).toUpperCase();
    el.hangupBtn.textContent = 'Hang up';
    setState('in-call');
    setStatus(`Connecting to ${c.peer}…`);
    clearTimeout(c.timer);
    c.timer = setTimeout(() => {
      if (call === c && !c.connected) failCall(`No media connection to ${c.peer} within ${CONNECT_TIMEOUT_MS / 1000} s.`);
    }, CONNECT_TIMEOUT_MS);
  }

  function addRemoteTrack(c, track) {
    if (!c.remoteStream) c.remoteStream = new MediaStream();
    if (!c.remoteStream.getTrackById(track.id)) c.remoteStream.addTrack(track);
    if (track.kind === 'audio') {
      el.remoteAudio.srcObject = c.remoteStream;
      playRemoteAudio();
    } else if (track.kind === 'video') {
      el.remoteVideo.srcObject = c.remoteStream; // muted: sound goes through <audio> only
      el.remoteVideo.hidden = false;
      el.placeholder.hidden = true;
      el.remoteVideo.play().catch(() => { /* muted video autoplays; ignore */ });
    }
  }

  // The panel's chat line (data channel): shown big, e.g. "Please leave the parcel at the door".
  function setupDataChannel(c, dc) {
    c.dc = dc;
    dc.onclose = () => {
      if (call === c && c.connected) endCall('ended', 'Call ended', { notify: true });
    };
    dc.onmessage = (e) => {
      if (call !== c) return;
      let text = typeof e.data === 'string' ? e.data : '';
      try {
        const m = JSON.parse(text);
        if (m && typeof m.text === 'string') text = m.text;
      } catch (_) { /* plain text */ }
      el.message.textContent = text.slice(0, 500);
      el.message.hidden = !text;
    };
  }

  function failCall(text) {
    setStatus(`Call failed: ${text}`, 'error');
    endCall('failed', 'Call failed', { notify: true, reason: 'failed' }, false);
  }

  // End the call (or the ringing) and go back to ready. notify: tell the other side(s).
  function endCall(result, resultText, { notify = true, reason } = {}, updateStatus = true) {
    const c = call;
    if (!c) return;
    if (notify && c.signaled) {
      const extra = reason ? { reason } : {};
      if (c.role === 'caller' && !c.pc) {
        // Still ringing: cancel it everywhere it rings.
        send(c.group ? { type: 'hangup', to: '*', call: c.id, ...extra } : { type: 'hangup', to: c.peer, call: c.id, ...extra });
      } else if (c.role === 'callee' && !c.pc) {
        send({ type: 'call-reject', to: c.peer, call: c.id, reason: reason || 'declined' });
      } else {
        send({ type: 'hangup', to: c.peer, call: c.id, ...extra });
      }
    }
    call = null;
    clearTimeout(c.timer);
    stopTone();
    if (c.dc) { c.dc.onopen = c.dc.onclose = c.dc.onmessage = null; try { c.dc.close(); } catch (_) { /* ignore */ } }
    if (c.pc) {
      const pc = c.pc;
      pc.onicecandidate = pc.ontrack = pc.ondatachannel = pc.oniceconnectionstatechange = pc.onconnectionstatechange = null;
      try { pc.close(); } catch (_) { /* ignore */ }
    }
    stopStream(c.localStream);
    for (const v of [el.remoteAudio, el.remoteVideo, el.localVideo]) v.srcObject = null;
    el.remoteVideo.hidden = true;
    el.localVideo.hidden = true;
    el.placeholder.hidden = false;
    el.soundOverlay.hidden = true;
    delete document.body.dataset.ice;
    delete document.body.dataset.media;
    delete document.body.dataset.sound;
    setState(idleState());
    if (result) showResult(result, resultText);
    if (updateStatus) {
      if (resultText) setStatus(`${resultText} (${c.peer || targetText()}).`, result === 'ended' ? 'info' : 'warn');
      else setReadyStatus();
    }
    if (app.state === 'ready') el.ringBtn.focus({ preventScroll: true });
  }

  function hangup() {
    const c = call;
    if (!c) return;
    if (app.state === 'ringing') endCall('', '', { notify: true }); // cancelled: nothing to report
    else endCall('ended', 'Call ended', { notify: true });
  }

  // ---------------------------------------------------------------- buttons, keys
  el.ringBtn.addEventListener('click', ring);
  el.hangupBtn.addEventListener('click', hangup);
  // A hardware button wired as a key (Enter or Space) rings; Escape hangs up.
  document.addEventListener('keydown', (ev) => {
    if (ev.target && (ev.target.tagName === 'INPUT' || ev.target.tagName === 'TEXTAREA')) return;
    if ((ev.key === 'Enter' || ev.key === ' ') && app.state === 'ready') {
      ev.preventDefault();
      ring();
    } else if (ev.key === 'Escape' && call) {
      ev.preventDefault();
      hangup();
    }
  });
  window.addEventListener('pagehide', () => { if (call) endCall('', '', { notify: true, reason: 'left' }); });

  // ---------------------------------------------------------------- setup form
  function showSetup(error) {
    const c = app.config || storedConfig() || {};
    el.setupId.value = c.id || params.get('id') || '';
    el.setupRoom.value = c.room && c.room !== 'lobby' ? c.room : (params.get('room') || '');
    el.setupCall.value = c.call && c.call !== '*' ? c.call : '';
    el.setupError.textContent = error || '';
    el.setupError.hidden = !error;
    setState('setup');
    setStatus(error ? 'Setup needed.' : 'Set up this door station.', error ? 'error' : 'info');
    el.setupId.focus();
  }

  el.setupForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const c = checkConfig(el.setupId.value, el.setupRoom.value, el.setupCall.value);
    if (c.error) {
      el.setupError.textContent = c.error;
      el.setupError.hidden = false;
      return;
    }
    store(LS_CONFIG, JSON.stringify(c));
    // The stored setup wins from now on: drop ?setup=1 or a stale ?id= from the address.
    if (location.search) history.replaceState(null, '', location.pathname);
    ensureAudioCtx();
    start(c);
  });

  // ---------------------------------------------------------------- test / debug handle
  const handle = {
    get pc() { return call ? call.pc : null; },
    get dc() { return call ? call.dc : null; },
    get state() { return app.state; },
    get conn() { return app.conn; },
    get id() { return app.myId; },
    get room() { return app.room; },
    get config() { return app.config ? { ...app.config } : null; },
    get peers() { return Array.from(app.peers); },
    get currentCall() {
      return call ? { id: call.id, peer: call.peer, role: call.role, group: call.group, media: call.media,
        targets: Array.from(call.targets), connected: call.connected } : null;
    },
    get localStream() { return call ? call.localStream : null; },
    get remoteStream() { return call ? call.remoteStream : null; },
    ring, hangup,
  };
  window.door = handle;
  // The same handle under the intercom page's name, so shared test helpers (lib.mjs) work here too.
  window.intercom = handle;

  // ---------------------------------------------------------------- start
  function start(config) {
    app.config = config;
    setNotice('config', '');
    el.me.textContent = `${config.id} · ${config.room}`;
    document.title = `Door station ${config.id}`;
    if (!mediaAvailable()) {
      setState('error');
      document.body.dataset.error = 'insecure';
      setNotice('insecure', insecureText(), 'error');
      setStatus('Not a secure context: calls are impossible here.', 'error');
      return;
    }
    setState('offline');
    retryAttempt = 0;
    connect();
    keepAwake();
    checkPermissions();
    checkAutoplay();
  }

  setState('starting');
  setConn('disconnected');
  (() => {
    if (params.has('setup')) { showSetup(); return; }
    if (params.has('id')) {
      const c = checkConfig(params.get('id'), params.get('room'), params.get('call'));
      if (c.error) { showSetup(`The address has a bad setting: ${c.error}`); return; }
      start(c);
      return;
    }
    const saved = storedConfig();
    if (saved) start(saved);
    else showSetup();
  })();
})();
