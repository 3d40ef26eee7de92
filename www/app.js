// Intercom page: pick a name, see who is online, call them (WebRTC), chat.
// Plain JavaScript, no build step. Talks to intercomd over /ws (see SPEC.md).
'use strict';

(() => {
  // ---------------------------------------------------------------- constants
  const ID_RE = /^[A-Za-z0-9._~-]{1,64}$/;
  const LS_NAME = 'intercom.name';
  const LS_TOKEN = 'intercom.token';
  const RING_TIMEOUT_MS = 30000;      // no answer within this: the call failed
  const CONNECT_TIMEOUT_MS = 30000;   // accepted, but no media connection within this
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const KEEPALIVE_IDLE_MS = 25000;    // nothing heard for this long: probe the server
  const KEEPALIVE_TIMEOUT_MS = 10000; // probe unanswered for this long: reconnect
  const MAX_OUTBOX = 256;             // signaling kept while the socket is down
  const MAX_PENDING_CANDIDATES = 256;
  const MAX_CHAT_LINES = 500;

  // ---------------------------------------------------------------- elements
  const $ = (id) => document.getElementById(id);
  const el = {
    me: $('me'), conn: $('conn'),
    status: $('status'), statusText: $('status-text'), retryBtn: $('retry-btn'),
    secureWarning: $('secure-warning'),
    login: $('login'), nameForm: $('name-form'), nameInput: $('name-input'), nameError: $('name-error'),
    online: $('online'), roomLabel: $('room-label'), changeNameBtn: $('change-name-btn'),
    peerList: $('peer-list'), noPeers: $('no-peers'),
    incoming: $('incoming'), incomingFrom: $('incoming-from'), incomingKind: $('incoming-kind'),
    acceptBtn: $('accept-btn'), rejectBtn: $('reject-btn'),
    outgoing: $('outgoing'), outgoingTo: $('outgoing-to'), outgoingKind: $('outgoing-kind'), cancelBtn: $('cancel-btn'),
    call: $('call'), callPeer: $('call-peer'), callState: $('call-state'), callAvatar: $('call-avatar'),
    remoteVideo: $('remote-video'), localVideo: $('local-video'), audioOnly: $('audio-only'),
    remoteAudio: $('remote-audio'), unblockAudioBtn: $('unblock-audio-btn'),
    muteBtn: $('mute-btn'), hangupBtn: $('hangup-btn'),
    chatLog: $('chat-log'), chatForm: $('chat-form'), chatInput: $('chat-input'), chatSend: $('chat-send'),
  };
  const baseTitle = document.title;

  // ---------------------------------------------------------------- storage
  function load(key) { try { return localStorage.getItem(key); } catch (_) { return null; } }
  function store(key, value) { try { localStorage.setItem(key, value); } catch (_) { /* private mode */ } }
  // This tab's own name survives a reload of the tab; localStorage holds the default for new tabs.
  function loadTab() { try { return sessionStorage.getItem(LS_NAME); } catch (_) { return null; } }
  function storeTab(value) { try { sessionStorage.setItem(LS_NAME, value); } catch (_) { /* ignore */ } }

  function randomHex(bytes) {
    const a = new Uint8Array(bytes);
    crypto.getRandomValues(a); // available in insecure contexts too
    return Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  let token = load(LS_TOKEN);
  if (!token || !/^[0-9a-f]{32}$/.test(token)) {
    token = randomHex(16);
    store(LS_TOKEN, token);
  }

  // Optional ?room=NAME in the page address; omitted = the server's default (lobby).
  const pageRoom = (() => {
    const r = new URLSearchParams(location.search).get('room');
    return r && ID_RE.test(r) ? r : null;
  })();

  // ---------------------------------------------------------------- app state
  const app = {
    conn: 'disconnected', // disconnected | connecting | connected | reconnecting | closed
    state: 'idle',        // idle | ringing | calling | in-call
    name: null,           // the id we ask for
    myId: null,           // the id the server confirmed
    room: null,
    peers: new Set(),
    iceServers: [],
  };
  let ws = null;
  let call = null; // { id, peer, media, role, pc, dc, localStream, remoteStream, pending, timer, signaled, connected }

  // ---------------------------------------------------------------- status UI
  let statusAction = null;
  function setStatus(text, level = 'info', action = null) {
    el.statusText.textContent = text;
    el.status.dataset.level = level;
    statusAction = action;
    el.retryBtn.hidden = !action;
    if (action) el.retryBtn.textContent = action.label;
    if (level === 'error') console.warn('[intercom]', text);
  }
  el.retryBtn.addEventListener('click', () => { const a = statusAction; if (a) a.fn(); });

  function setConn(c) {
    app.conn = c;
    document.body.dataset.conn = c;
    el.conn.textContent = c === 'connected' ? 'online' : (c === 'connecting' ? 'connecting…' : 'offline');
    el.conn.dataset.level = c === 'connected' ? 'ok' : (c === 'connecting' || c === 'reconnecting' ? 'warn' : 'off');
    renderPeers();
  }

  function setState(s) {
    app.state = s;
    document.body.dataset.state = s;
    el.incoming.hidden = s !== 'ringing';
    el.outgoing.hidden = s !== 'calling';
    el.call.hidden = s !== 'in-call';
    el.online.hidden = !app.myId || s === 'in-call';
    el.changeNameBtn.disabled = s !== 'idle';
    renderPeers();
  }

  function showLogin(focus = true) {
    el.login.hidden = false;
    el.online.hidden = true;
    el.me.hidden = true;
    app.myId = null;
    if (focus) el.nameInput.focus();
  }

  function showNameError(text) {
    el.nameError.textContent = text;
    el.nameError.hidden = !text;
  }

  // ---------------------------------------------------------------- secure context
  function mediaAvailable() {
    return window.isSecureContext !== false && !!navigator.mediaDevices &&
      typeof navigator.mediaDevices.getUserMedia === 'function';
  }
  function httpsHint() { return `https://${location.hostname}:8443${location.pathname}`; }
  function insecureText() {
    return 'This page is not in a secure context, so the browser blocks the microphone and camera: ' +
      'browsers allow the microphone only over https or on localhost. ' +
      `Open the https address of this intercom instead (by default ${httpsHint()}).`;
  }
  if (!mediaAvailable()) {
    el.secureWarning.hidden = false;
    el.secureWarning.textContent = insecureText() + ' ';
    const a = document.createElement('a');
    a.href = httpsHint();
    a.textContent = 'Open the secure page';
    a.dataset.testid = 'https-link';
    el.secureWarning.append(a);
  }

  // ---------------------------------------------------------------- signaling socket
  let everConnected = false;
  let fatalReason = null;     // set by a fatal server error, read when the socket closes
  let lastError = null;       // text of the last server error message
  let retryAttempt = 0;
  let retryTimer = null;
  let retryTick = null;
  let outbox = [];
  let lastRx = 0;
  let probeSentAt = 0;
  let keepaliveTimer = null;

  function wsUrl() {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    // id, room and token are all of the unreserved alphabet: encodeURIComponent keeps them as they are.
    let q = `id=${encodeURIComponent(app.name)}&token=${encodeURIComponent(token)}`;
    if (pageRoom) q += `&room=${encodeURIComponent(pageRoom)}`;
    return `${proto}://${location.host}/ws?${q}`;
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
    if (!app.name) { showLogin(); return; }
    fatalReason = null;
    lastError = null;
    setConn(retryAttempt > 0 ? 'reconnecting' : 'connecting');
    if (retryAttempt === 0) setStatus(`Connecting as ${app.name}…`);
    let s;
    try {
      s = new WebSocket(wsUrl());
    } catch (e) {
      scheduleReconnect(`Cannot open a connection to the server (${e.message})`);
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

  function disconnect() {
    clearRetry();
    dropSocket();
    outbox = [];
    retryAttempt = 0;
    app.peers.clear();
    setConn('disconnected');
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

  function onSocketClosed(code, reason) {
    stopKeepalive();
    app.peers.clear();
    renderPeers();
    const why = fatalReason;
    if (code === 4000 || why === 'invalid-id' || why === 'invalid-room' || why === 'invalid-token') {
      setConn('closed');
      const text = lastError || `The server refused this name, room or token${reason ? ` (${reason})` : ''}.`;
      setStatus(`${text} Pick another name.`, 'error');
      showNameError(text);
      showLogin();
      return;
    }
    if (code === 4002 || why === 'id-taken') {
      setConn('closed');
      setStatus(`The name “${app.name}” is already in use. Pick another name.`, 'error');
      showNameError('This name is already in use: pick another one.');
      showLogin();
      return;
    }
    if (code === 4001) {
      // The other tab now owns this id and its messages: a call here could not be signaled any more.
      if (call) endCall('', 'info', { notify: false });
      setConn('closed');
      setStatus('This intercom was opened in another tab or window, so this one was disconnected.', 'warn',
        { label: 'Use it here', fn: () => { retryAttempt = 0; connect(); } });
      return;
    }
    let text;
    if (code === 4005 || why === 'server-full') text = 'The server is full';
    else if (code === 4006 || why === 'room-full') text = 'This room is full';
    else if (code === 1001) text = 'The server is restarting';
    else if (code === 4008 || code === 4009) text = 'The server dropped this connection';
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

  // Keepalive: a socket on a phone that lost Wi-Fi can look open for minutes.
  // When nothing was heard for a while ask the server for the peer list; no answer means reconnect.
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
    if (ws && ws.readyState === WebSocket.OPEN && !probeSentAt && Date.now() - lastRx > 5000) {
      probeSentAt = Date.now();
      send({ type: 'peers' });
    } else if (retryTimer) {
      connect();
    }
  });
  window.addEventListener('online', () => { if (retryTimer) connect(); });

  // ---------------------------------------------------------------- server messages
  function onServerText(data) {
    lastRx = Date.now();
    probeSentAt = 0;
    let msg;
    try { msg = JSON.parse(data); } catch (_) { console.warn('[intercom] non-JSON from server', data); return; }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
    switch (msg.type) {
      case 'welcome': onWelcome(msg); break;
      case 'peer-joined':
        if (typeof msg.id === 'string' && msg.id !== app.myId) { app.peers.add(msg.id); renderPeers(); }
        break;
      case 'peer-left':
        if (typeof msg.id === 'string') {
          app.peers.delete(msg.id);
          renderPeers();
          if (call && call.peer === msg.id) {
            const text = app.state === 'ringing' ? `${msg.id} went offline: missed call.`
              : `${msg.id} went offline: the call ended.`;
            endCall(text, 'warn', { notify: false });
          }
        }
        break;
      case 'peers':
        if (Array.isArray(msg.peers)) {
          app.peers = new Set(msg.peers.filter((p) => typeof p === 'string' && p !== app.myId));
          renderPeers();
        }
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
    app.myId = typeof msg.id === 'string' ? msg.id : app.name;
    app.room = typeof msg.room === 'string' ? msg.room : 'lobby';
    app.peers = new Set((Array.isArray(msg.peers) ? msg.peers : []).filter((p) => typeof p === 'string' && p !== app.myId));
    if (Array.isArray(msg.iceServers)) {
      app.iceServers = msg.iceServers;
    } else {
      fetch('/api/ice-servers').then((r) => r.json()).then((j) => {
        if (j && Array.isArray(j.iceServers)) app.iceServers = j.iceServers;
      }).catch(() => { /* keep the last list */ });
    }
    store(LS_NAME, app.myId);
    storeTab(app.myId);
    showNameError('');
    el.login.hidden = true;
    el.me.hidden = false;
    el.me.textContent = app.myId;
    el.roomLabel.textContent = app.room === 'lobby' ? '' : `in ${app.room}`;
    setConn('connected');
    setState(app.state); // re-evaluates which cards show
    if (call) setStatus(`Back online. Still in a call with ${call.peer}.`);
    else setStatus(`Online as ${app.myId}.`, 'ok');
    const queued = outbox;
    outbox = [];
    for (const m of queued) send(m);
  }

  function onServerError(msg) {
    const code = String(msg.code || 'error');
    const text = typeof msg.message === 'string' && msg.message ? msg.message : code;
    const ref = msg.ref && typeof msg.ref === 'object' ? msg.ref : {};
    lastError = text;
    switch (code) {
      case 'id-taken':
        fatalReason = code;
        setStatus(`The name “${app.name}” is already in use. Pick another name.`, 'error');
        return;
      case 'invalid-id':
      case 'invalid-room':
      case 'invalid-token':
        fatalReason = code;
        setStatus(`The server refused the connection: ${text}`, 'error');
        showNameError(text);
        return;
      case 'server-full':
      case 'room-full':
        fatalReason = code;
        setStatus(code === 'server-full' ? 'The server is full.' : 'This room is full.', 'warn');
        return;
      case 'unknown-peer':
      case 'peer-unavailable':
        if (call && ref.to === call.peer && ref.type !== 'hangup' && ref.type !== 'call-reject') {
          endCall(`${call.peer} is not reachable any more: the call ended.`, 'error', { notify: false });
        } else if (ref.type === 'call-request') {
          setStatus(`${ref.to || 'That peer'} is not online.`, 'warn');
        }
        return;
      case 'rate-limited':
        setStatus('Sending too fast: the server dropped a message.', 'warn');
        return;
      default:
        if (ref.type === 'peers') return; // keepalive probe answered by an error: still alive
        setStatus(`Server error (${code}): ${text}`, 'error');
    }
  }

  // ---------------------------------------------------------------- peer list
  function renderPeers() {
    const ids = Array.from(app.peers).sort((a, b) => a.localeCompare(b));
    const canCall = app.conn === 'connected' && app.state === 'idle';
    const items = ids.map((id) => {
      const li = document.createElement('li');
      li.className = 'peer';
      li.dataset.peer = id;
      li.dataset.testid = `peer-${id}`;
      if (call && call.peer === id) li.classList.add('busy');
      const name = document.createElement('span');
      name.className = 'peer-name';
      name.textContent = id;
      const btns = document.createElement('span');
      btns.className = 'peer-actions';
      for (const media of ['audio', 'video']) {
        const b = document.createElement('button');
        b.type = 'button';
        b.dataset.media = media;
        b.dataset.testid = `call-${media}-${id}`;
        b.className = media === 'audio' ? 'call-audio' : 'call-video';
        b.textContent = media === 'audio' ? 'Call (audio)' : 'Call (video)';
        b.setAttribute('aria-label', `Call ${id} with ${media}`);
        b.disabled = !canCall;
        btns.append(b);
      }
      li.append(name, btns);
      return li;
    });
    el.peerList.replaceChildren(...items);
    el.noPeers.hidden = ids.length > 0;
  }

  el.peerList.addEventListener('click', (ev) => {
    const b = ev.target.closest('button[data-media]');
    if (!b || b.disabled) return;
    const li = b.closest('li[data-peer]');
    if (li) placeCall(li.dataset.peer, b.dataset.media);
  });

  // ---------------------------------------------------------------- tones (WebAudio)
  let audioCtx = null;
  let tone = null; // { gain, timer }
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
  // Unlock audio on the first tap so a later incoming call can ring.
  for (const t of ['pointerdown', 'keydown']) document.addEventListener(t, ensureAudioCtx, { capture: true });

  function startTone(kind) {
    stopTone();
    const ctx = ensureAudioCtx();
    if (!ctx) return;
    try {
      const gain = ctx.createGain();
      gain.gain.value = kind === 'ring' ? 0.25 : 0.08;
      gain.connect(ctx.destination);
      const beep = (at, dur, freqs) => {
        const env = ctx.createGain();
        env.gain.setValueAtTime(0, at);
        env.gain.linearRampToValueAtTime(1, at + 0.02);
        env.gain.setValueAtTime(1, at + dur - 0.03);
        env.gain.linearRampToValueAtTime(0, at + dur);
        env.connect(gain);
        for (const f of freqs) {
          const o = ctx.createOscillator();
          o.frequency.value = f;
          o.connect(env);
          o.start(at);
          o.stop(at + dur);
        }
      };
      const pattern = () => {
        const t = ctx.currentTime + 0.05;
        if (kind === 'ring') { // two short chimes every 2 s
          beep(t, 0.35, [880, 1320]);
          beep(t + 0.5, 0.35, [660, 990]);
        } else { // ringback: 1 s tone every 4 s
          beep(t, 1.0, [425]);
        }
      };
      pattern();
      tone = { gain, timer: setInterval(pattern, kind === 'ring' ? 2000 : 4000) };
    } catch (e) {
      console.warn('[intercom] tone failed', e);
    }
    if (kind === 'ring' && navigator.vibrate) { try { navigator.vibrate([400, 200, 400]); } catch (_) { /* ignore */ } }
  }
  function stopTone() {
    if (!tone) return;
    clearInterval(tone.timer);
    try { tone.gain.disconnect(); } catch (_) { /* ignore */ }
    tone = null;
    if (navigator.vibrate) { try { navigator.vibrate(0); } catch (_) { /* ignore */ } }
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
        setStatus('No usable camera: continuing with audio only.', 'warn');
        return s;
      }
      throw e;
    }
  }

  function mediaErrorText(e, media) {
    const what = media === 'video' ? 'microphone and camera' : 'microphone';
    switch (e && e.name) {
      case 'InsecureContext': return insecureText();
      case 'NotAllowedError':
      case 'PermissionDeniedError':
      case 'SecurityError':
        return `Access to the ${what} was denied. Allow it for this site in the browser settings ` +
          '(the lock or camera icon next to the address), then try again.';
      case 'NotFoundError': return `No ${what} was found on this device.`;
      case 'NotReadableError': return `The ${what} is in use by another application or could not be started.`;
      default: return `Could not start the ${what}: ${e && e.name ? e.name + ': ' : ''}${e && e.message ? e.message : e}`;
    }
  }

  function stopStream(s) { if (s) for (const t of s.getTracks()) t.stop(); }

  // ---------------------------------------------------------------- calls
  function matches(msg) {
    return !!call && msg.from === call.peer && (!msg.call || !call.id || msg.call === call.id);
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
      default: break; // not ours
    }
  }

  async function placeCall(peer, media) {
    if (call || app.conn !== 'connected' || app.state !== 'idle') return;
    if (!ID_RE.test(peer)) return;
    media = media === 'video' ? 'video' : 'audio';
    ensureAudioCtx();
    const c = call = {
      id: randomHex(8), peer, media, role: 'caller',
      pc: null, dc: null, localStream: null, remoteStream: null, pending: [],
      timer: null, signaled: false, connected: false,
    };
    el.outgoingTo.textContent = peer;
    el.outgoingKind.textContent = media === 'video' ? 'Video call' : 'Audio call';
    setState('calling');
    setStatus(`Calling ${peer}…`);
    let stream;
    try {
      stream = await getMedia(media);
    } catch (e) {
      if (call === c) endCall(mediaErrorText(e, media), 'error', { notify: false });
      return;
    }
    if (call !== c) { stopStream(stream); return; } // cancelled meanwhile
    c.localStream = stream;
    send({ type: 'call-request', to: peer, call: c.id, media });
    c.signaled = true;
    startTone('ringback');
    c.timer = setTimeout(() => {
      if (call === c && app.state === 'calling') {
        endCall(`Call failed: ${peer} did not answer within ${RING_TIMEOUT_MS / 1000} s.`, 'error', { notify: true, reason: 'no-answer' });
      }
    }, RING_TIMEOUT_MS);
  }

  function onCallRequest(msg) {
    const from = msg.from;
    const media = msg.media === 'video' ? 'video' : 'audio';
    // ring:"room": the caller (a door station) rings everyone in the room; the first to accept
    // gets the call, the others receive hangup with reason "answered-elsewhere".
    const group = msg.ring === 'room';
    if (call) {
      if (call.peer === from && msg.call && msg.call === call.id) return; // duplicate
      if (call.peer === from && call.role === 'caller' && app.state === 'calling') {
        // Both called each other at once: the smaller id stays the caller, the other answers.
        if (app.myId < from) return; // they will answer our request
        const c = call;
        send({ type: 'hangup', to: from, call: c.id, reason: 'glare' });
        call = null;
        clearTimeout(c.timer);
        stopTone();
        stopStream(c.localStream);
        startRinging(from, media, msg.call, group);
        acceptCall();
        return;
      }
      send({ type: 'call-reject', to: from, call: msg.call, reason: 'busy' });
      return;
    }
    startRinging(from, media, msg.call, group);
  }

  function startRinging(from, media, callId, group = false) {
    const c = call = {
      id: typeof callId === 'string' ? callId : null, peer: from, media, role: 'callee',
      pc: null, dc: null, localStream: null, remoteStream: null, pending: [],
      timer: null, signaled: true, connected: false, accepting: false,
    };
    el.incomingFrom.textContent = from;
    el.incomingKind.textContent = `is calling ${group ? 'everyone' : 'you'} (${media})…`;
    el.acceptBtn.disabled = false;
    el.rejectBtn.disabled = false;
    setState('ringing');
    setStatus(`Incoming ${media} call from ${from}.`);
    document.title = `📞 ${from} is calling – ${baseTitle}`;
    startTone('ring');
    c.timer = setTimeout(() => {
      if (call === c && app.state === 'ringing') {
        endCall(`Missed call from ${from}.`, 'warn', { notify: true, reason: 'no-answer' });
      }
    }, RING_TIMEOUT_MS);
  }

  async function acceptCall() {
    const c = call;
    if (!c || c.role !== 'callee' || app.state !== 'ringing' || c.accepting) return;
    c.accepting = true;
    el.acceptBtn.disabled = true;
    clearTimeout(c.timer);
    stopTone();
    ensureAudioCtx();
    setStatus(mediaAvailable() ? 'Starting the microphone…' : insecureText());
    let stream;
    try {
      stream = await getMedia(c.media);
    } catch (e) {
      if (call === c) endCall(mediaErrorText(e, c.media), 'error', { notify: true, reason: 'media-error' });
      return;
    }
    if (call !== c) { stopStream(stream); return; } // caller gave up meanwhile
    c.localStream = stream;
    if (!createPeerConnection(c)) return;
    enterCall(c);
    send({ type: 'call-accept', to: c.peer, call: c.id, media: c.media });
    startConnectTimer(c);
  }

  async function onCallAccept(msg) {
    if (!matches(msg) || call.role !== 'caller' || app.state !== 'calling' || !call.localStream) return;
    const c = call;
    clearTimeout(c.timer);
    stopTone();
    if (!createPeerConnection(c)) return;
    setupDataChannel(c, c.pc.createDataChannel('chat'));
    enterCall(c);
    startConnectTimer(c);
    try {
      const offer = await c.pc.createOffer();
      if (call !== c) return;
      await c.pc.setLocalDescription(offer);
      if (call !== c) return;
      send({ type: 'offer', to: c.peer, call: c.id, sdp: c.pc.localDescription.sdp });
    } catch (e) {
      if (call === c) failCall(`Call failed: could not create an offer (${e.message}).`);
    }
  }

  function onCallReject(msg) {
    if (!matches(msg) || call.role !== 'caller' || app.state !== 'calling') return;
    const p = call.peer;
    let text;
    switch (msg.reason) {
      case 'busy': text = `${p} is busy in another call.`; break;
      case 'no-answer': text = `${p} did not answer.`; break;
      case 'media-error': text = `${p} could not start their microphone or camera.`; break;
      case 'left': text = `${p} closed the intercom page.`; break;
      default: text = `${p} rejected the call.`;
    }
    endCall(text, 'warn', { notify: false });
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
      if (call === c) failCall(`Call failed: could not answer the offer (${e.message}).`);
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
      if (call === c) failCall(`Call failed: the answer was not accepted (${e.message}).`);
    }
  }

  function onCandidate(msg) {
    if (!matches(msg) || !msg.candidate || typeof msg.candidate !== 'object') return;
    const c = call;
    if (!c.pc || !c.pc.remoteDescription) {
      if (c.pending.length < MAX_PENDING_CANDIDATES) c.pending.push(msg.candidate);
      return;
    }
    c.pc.addIceCandidate(msg.candidate).catch((e) => console.warn('[intercom] bad candidate', e));
  }

  function flushCandidates(c) {
    const list = c.pending;
    c.pending = [];
    for (const cand of list) c.pc.addIceCandidate(cand).catch((e) => console.warn('[intercom] bad candidate', e));
  }

  function onHangup(msg) {
    if (!matches(msg)) return;
    const p = call.peer;
    let text;
    if (msg.reason === 'answered-elsewhere') {
      const by = typeof msg.answeredBy === 'string' && ID_RE.test(msg.answeredBy) ? msg.answeredBy : 'Someone else';
      text = `${by} answered the call from ${p}.`;
    } else if (app.state === 'ringing') text = `Missed call from ${p}.`;
    else if (app.state === 'calling') text = `${p} is not available.`;
    else if (msg.reason === 'failed') text = `Call failed: no media connection to ${p} could be established.`;
    else if (msg.reason === 'left') text = `${p} closed the intercom page: the call ended.`;
    else text = `${p} hung up.`;
    endCall(text, msg.reason === 'failed' ? 'error' : 'info', { notify: false });
  }

  function createPeerConnection(c) {
    let pc;
    try {
      pc = new RTCPeerConnection({ iceServers: app.iceServers });
    } catch (e) {
      console.warn('[intercom] ICE server list refused, using none', e);
      try { pc = new RTCPeerConnection({ iceServers: [] }); } catch (e2) {
        failCall(`Call failed: this browser cannot make WebRTC calls (${e2.message}).`);
        return false;
      }
    }
    c.pc = pc;
    for (const t of c.localStream.getTracks()) pc.addTrack(t, c.localStream);
    // Trickle ICE: every candidate goes out as soon as it is found.
    pc.onicecandidate = (e) => {
      if (e.candidate && call === c) send({ type: 'candidate', to: c.peer, call: c.id, candidate: e.candidate.toJSON() });
    };
    pc.ontrack = (e) => { if (call === c) addRemoteTrack(c, e.track); };
    pc.ondatachannel = (e) => { if (call === c) setupDataChannel(c, e.channel); };
    pc.oniceconnectionstatechange = () => { if (call === c) onIceState(c); };
    pc.onconnectionstatechange = () => {
      if (call === c && pc.connectionState === 'failed') {
        failCall(`Call failed: no media connection to ${c.peer} could be established.`);
      }
    };
    return true;
  }

  function onIceState(c) {
    const s = c.pc.iceConnectionState;
    document.body.dataset.ice = s;
    switch (s) {
      case 'checking':
        el.callState.textContent = 'connecting';
        break;
      case 'connected':
      case 'completed':
        clearTimeout(c.timer);
        el.callState.textContent = 'connected';
        el.callState.dataset.level = 'ok';
        if (!c.connected) setStatus(`In call with ${c.peer}.`, 'ok');
        c.connected = true;
        break;
      case 'disconnected':
        el.callState.textContent = 'interrupted';
        el.callState.dataset.level = 'warn';
        setStatus(`The connection to ${c.peer} is interrupted; trying to recover…`, 'warn');
        break;
      case 'failed':
        failCall(`Call failed: the media connection to ${c.peer} failed (ICE failed).`);
        break;
      default:
        break;
    }
  }

  function startConnectTimer(c) {
    clearTimeout(c.timer);
    c.timer = setTimeout(() => {
      if (call === c && !c.connected) {
        failCall(`Call failed: no media connection to ${c.peer} within ${CONNECT_TIMEOUT_MS / 1000} s.`);
      }
    }, CONNECT_TIMEOUT_MS);
  }

  function failCall(text) {
    endCall(text, 'error', { notify: true, reason: 'failed' });
  }

  function enterCall(c) {
    el.callPeer.textContent = c.peer;
    el.callAvatar.textContent = c.peer.slice(0, 1).toUpperCase();
    el.callState.textContent = 'connecting';
    el.callState.dataset.level = 'warn';
    el.chatLog.replaceChildren();
    el.muteBtn.setAttribute('aria-pressed', 'false');
    el.muteBtn.textContent = 'Mute';
    document.body.dataset.muted = 'false';
    if (c.media === 'video' && c.localStream.getVideoTracks().length) {
      el.localVideo.srcObject = c.localStream;
      el.localVideo.hidden = false;
    }
    document.title = `In call with ${c.peer} – ${baseTitle}`;
    document.body.dataset.media = c.media;
    setState('in-call');
    setStatus(`Connecting to ${c.peer}…`);
  }

  function addRemoteTrack(c, track) {
    if (!c.remoteStream) c.remoteStream = new MediaStream();
    if (!c.remoteStream.getTrackById(track.id)) c.remoteStream.addTrack(track);
    // Audio goes out through the <audio> element only; the <video> element stays muted.
    if (track.kind === 'audio') {
      el.remoteAudio.srcObject = c.remoteStream;
      playRemoteAudio();
    } else if (track.kind === 'video') {
      el.remoteVideo.srcObject = c.remoteStream;
      el.remoteVideo.hidden = false;
      el.audioOnly.hidden = true;
      el.remoteVideo.play().catch(() => { /* muted video autoplays; ignore */ });
    }
  }

  function playRemoteAudio() {
    const p = el.remoteAudio.play();
    if (p && p.catch) {
      p.then(() => { el.unblockAudioBtn.hidden = true; })
        .catch(() => { el.unblockAudioBtn.hidden = false; });
    }
  }
  el.unblockAudioBtn.addEventListener('click', playRemoteAudio);

  function setupDataChannel(c, dc) {
    c.dc = dc;
    dc.onopen = () => { if (call === c) enableChat(true); };
    dc.onclose = () => {
      if (call !== c) return;
      enableChat(false);
      // The other side closed its connection (its hangup message may be lost or late): end here too.
      if (c.connected) endCall(`The call with ${c.peer} ended.`, 'info', { notify: true });
    };
    dc.onmessage = (e) => {
      if (call !== c) return;
      let text = typeof e.data === 'string' ? e.data : '';
      try {
        const m = JSON.parse(text);
        if (m && typeof m.text === 'string') text = m.text;
      } catch (_) { /* plain text */ }
      addChat(c.peer, text, 'them');
    };
  }

  function enableChat(on) {
    el.chatInput.disabled = !on;
    el.chatSend.disabled = !on;
    document.body.dataset.chat = on ? 'open' : 'closed';
  }

  function addChat(who, text, side) {
    const li = document.createElement('li');
    li.className = `chat-${side}`;
    li.dataset.from = who;
    const b = document.createElement('b');
    b.textContent = side === 'me' ? 'me' : who;
    const span = document.createElement('span');
    span.textContent = text;
    li.append(b, ': ', span);
    el.chatLog.append(li);
    while (el.chatLog.childElementCount > MAX_CHAT_LINES) el.chatLog.firstElementChild.remove();
    el.chatLog.scrollTop = el.chatLog.scrollHeight;
  }

  el.chatForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = el.chatInput.value.trim();
    const c = call;
    if (!text || !c || !c.dc || c.dc.readyState !== 'open') return;
    try {
      c.dc.send(JSON.stringify({ type: 'chat', text }));
    } catch (e) {
      setStatus(`Could not send the message: ${e.message}`, 'error');
      return;
    }
    addChat(app.myId, text, 'me');
    el.chatInput.value = '';
    el.chatInput.focus();
  });

  function toggleMute() {
    const c = call;
    if (!c || !c.localStream) return;
    const tracks = c.localStream.getAudioTracks();
    const muted = tracks.length > 0 && tracks[0].enabled; // enabled now → mute
    for (const t of tracks) t.enabled = !muted;
    el.muteBtn.setAttribute('aria-pressed', String(muted));
    el.muteBtn.textContent = muted ? 'Unmute' : 'Mute';
    document.body.dataset.muted = String(muted);
  }

  // End the current call and go back to idle. notify: tell the other side (hangup, or
  // call-reject while it is still ringing here).
  function endCall(text, level = 'info', { notify = true, reason } = {}) {
    const c = call;
    if (!c) return;
    if (notify && c.signaled) {
      if (c.role === 'callee' && !c.pc) {
        send({ type: 'call-reject', to: c.peer, call: c.id, reason: reason || 'declined' });
      } else {
        const m = { type: 'hangup', to: c.peer, call: c.id };
        if (reason) m.reason = reason;
        send(m);
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
    el.audioOnly.hidden = false;
    el.unblockAudioBtn.hidden = true;
    enableChat(false);
    delete document.body.dataset.ice;
    delete document.body.dataset.chat;
    delete document.body.dataset.muted;
    delete document.body.dataset.media;
    document.title = baseTitle;
    setState('idle');
    if (text) setStatus(text, level);
  }

  // ---------------------------------------------------------------- buttons
  el.nameForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    ensureAudioCtx();
    const v = el.nameInput.value.trim();
    if (!ID_RE.test(v)) {
      showNameError('Use 1–64 characters: letters A–Z a–z, digits 0–9 and . _ ~ -');
      el.nameInput.focus();
      return;
    }
    showNameError('');
    app.name = v;
    retryAttempt = 0;
    connect();
  });
  el.changeNameBtn.addEventListener('click', () => {
    if (call) return;
    disconnect();
    setStatus('Pick a name to go online.');
    showLogin();
    el.nameInput.select();
  });
  el.acceptBtn.addEventListener('click', acceptCall);
  el.rejectBtn.addEventListener('click', () => {
    if (call && app.state === 'ringing') endCall(`Rejected the call from ${call.peer}.`, 'info', { notify: true, reason: 'declined' });
  });
  el.cancelBtn.addEventListener('click', () => {
    if (call && app.state === 'calling') endCall(`Call to ${call.peer} cancelled.`, 'info', { notify: true });
  });
  el.hangupBtn.addEventListener('click', () => {
    if (call) endCall(`Call with ${call.peer} ended.`, 'info', { notify: true });
  });
  el.muteBtn.addEventListener('click', toggleMute);

  // Leaving the page ends the call for the other side at once.
  window.addEventListener('pagehide', () => { if (call) endCall('', 'info', { notify: true, reason: 'left' }); });

  // ---------------------------------------------------------------- test / debug handle
  window.intercom = {
    get pc() { return call ? call.pc : null; },
    get dc() { return call ? call.dc : null; },
    get state() { return app.state; },
    get conn() { return app.conn; },
    get id() { return app.myId; },
    get room() { return app.room; },
    get peers() { return Array.from(app.peers); },
    get iceServers() { return app.iceServers; },
    get currentCall() { return call ? { id: call.id, peer: call.peer, media: call.media, role: call.role, connected: call.connected } : null; },
    get localStream() { return call ? call.localStream : null; },
    get remoteStream() { return call ? call.remoteStream : null; },
    placeCall, acceptCall,
    hangup: () => { if (call) endCall(`Call with ${call.peer} ended.`, 'info', { notify: true }); },
  };

  // ---------------------------------------------------------------- start
  setState('idle');
  setConn('disconnected');
  // Tabs of one browser share the token, so a second tab that went online under the
  // remembered name would take it from the first (close code 4001). Ask the other tabs first.
  let tabs = null;
  try { tabs = new BroadcastChannel('intercom'); } catch (_) { /* old browser */ }
  if (tabs) {
    tabs.onmessage = (ev) => {
      const m = ev.data || {};
      if (m.q === 'who' && m.name && m.name === app.name && app.conn !== 'disconnected' && app.conn !== 'closed') {
        tabs.postMessage({ a: 'mine', name: m.name });
      }
    };
  }
  function nameUsedByAnotherTab(name) {
    if (!tabs) return Promise.resolve(false);
    return new Promise((resolve) => {
      const probe = new BroadcastChannel('intercom');
      const done = (used) => { clearTimeout(timer); probe.close(); resolve(used); };
      const timer = setTimeout(() => done(false), 250);
      probe.onmessage = (ev) => { if (ev.data && ev.data.a === 'mine' && ev.data.name === name) done(true); };
      probe.postMessage({ q: 'who', name });
    });
  }

  const tabName = loadTab();
  const saved = tabName || load(LS_NAME);
  if (saved && ID_RE.test(saved)) {
    el.nameInput.value = saved;
    if (tabName) {
      app.name = saved; // a reload of this tab: take the name back at once
      connect();
    } else {
      nameUsedByAnotherTab(saved).then((used) => {
        if (app.name) return; // the user was quicker
        if (used) {
          setStatus(`“${saved}” is online in another tab of this browser. Pick another name for this tab.`, 'warn');
          showLogin();
          el.nameInput.select();
        } else {
          app.name = saved;
          connect();
        }
      });
    }
  } else {
    showLogin(false);
  }
})();
