// Door station (kiosk) page: one big button that rings a peer or the whole room, and
// automatic answering of calls from the intercom pages. Plain JavaScript, no build step.
// Speaks app.js's call protocol (call.js, over signal.js's socket; see SPEC.md).
// A room-wide ring is one call-request to "*" with ring:"room"; the first call-accept wins,
// every other rung peer gets hangup {reason:"answered-elsewhere", answeredBy}; cancelling or
// timing out sends one hangup to "*".
// When whoever answered opens the door from the call, the daemon sends {"type":"door-opened"}
// and the visitor reads "Door opened" in big text, during the call or after it.
'use strict';

(() => {
  // ---------------------------------------------------------------- constants
  const { ID_RE, load, store } = SignalKit;
  const LS_CONFIG = 'intercom.door';   // {id, room, call} from the setup form
  const RING_TIMEOUT_MS = 30000;       // nobody accepted within this: "No answer"
  const RESULT_SHOW_MS = 12000;        // how long "No answer" / "Busy" stays on the ready screen
  const OPENED_SHOW_MS = 8000;         // how long "Door opened" stays, over the call or the ready screen
  const TAG = '[door]';
  const RINGBACK = { volume: 0.12, everyMs: 3000, beeps: [[0, 1.0, [440]]] }; // 1 s tone every 3 s

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
    recent: $('recent'), ringsList: $('rings-list'), ringsLive: $('rings-live'),
  };

  // ---------------------------------------------------------------- config
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
    opened: 0,            // door-opened notices since the page loaded
  };
  // call.js's record plus: group, peer (null until someone accepts a room ring), targets: Set, replies: Map peer→reason
  let call = null;
  let rings = null; // CallKit.recentRings, once the station knows its room

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
    SignalKit.showConn(el.conn, c);
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
  const setStatus = SignalKit.statusLine({ box: el.statusText.parentElement, text: el.statusText, button: el.retryBtn, tag: TAG });

  // Notices: persistent problems (insecure page, camera blocked, id taken, sound blocked).
  const notices = new Map(); // key → {text, level, action}
  // extra: an element shown after the text (links).
  function setNotice(key, text, level = 'error', action = null, extra = null) {
    if (!text) notices.delete(key); else notices.set(key, { text, level, action, extra });
    const items = [];
    for (const [k, n] of notices) {
      const p = document.createElement('p');
      p.className = 'notice';
      p.dataset.level = n.level;
      p.dataset.testid = `notice-${k}`;
      p.textContent = n.text;
      if (n.extra) p.append(' ', n.extra);
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
    if (text && level === 'error') console.warn(TAG, text);
  }

  let resultTimer = null;
  // A call's outcome, in big text above the button: no-answer, busy, rejected, offline, nobody,
  // ended, failed, media-error; and opened ("Door opened"), which shows over a call too.
  function showResult(kind, text, ms = RESULT_SHOW_MS) {
    clearTimeout(resultTimer);
    el.result.textContent = text;
    el.result.dataset.kind = kind;
    el.result.hidden = false;
    document.body.dataset.result = kind;
    resultTimer = setTimeout(clearResult, ms);
  }
  function clearResult() {
    clearTimeout(resultTimer);
    el.result.hidden = true;
    delete document.body.dataset.result;
  }

  // ---------------------------------------------------------------- secure context, permissions
  // A kiosk's own text: the station's browser runs on the machine of the daemon.
  // The https part comes from SignalKit (the daemon's real https port, once /api/https answered).
  function insecureText() {
    const local = `http://localhost${location.port ? `:${location.port}` : ''}${location.pathname}${location.search}`;
    const url = SignalKit.httpsHint();
    const elsewhere = url ? `On any other machine open its https address: ${url}`
      : 'This intercom has no HTTPS listener, so on any other machine only an HTTPS proxy in front of it helps.';
    return 'This page is not in a secure context, so the browser blocks the camera and microphone. ' +
      `Open it as ${local} on the machine that runs intercomd. ${elsewhere}`;
  }

  // The kiosk is usually Chromium, but a tablet by the door may be an iPad (Safari) or Firefox.
  const deniedText = 'Camera or microphone blocked for this page. Allow them for this site in the browser ' +
    '(Safari: aA menu › Website Settings; Firefox and Chromium: the icon next to the address; a Chromium ' +
    'kiosk: policy AudioCaptureAllowedUrls / VideoCaptureAllowedUrls), then reload.';

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
      SignalKit.stopStream(s);
      setNotice('permission', '');
    } catch (e) {
      setNotice('permission', mediaErrorText(e), 'error', { label: 'Try again', fn: grantOnce });
    }
  }

  // ---------------------------------------------------------------- sound: autoplay
  // Autoplay: Safari, and Chromium without --autoplay-policy=no-user-gesture-required, keep sound
  // off until the first tap. Say so on the ready screen; during a call, a full-screen "Tap to
  // enable sound".
  function checkAutoplay() {
    const ctx = CallKit.audioContext();
    if (ctx && ctx.state !== 'running' && !(navigator.userActivation && navigator.userActivation.hasBeenActive)) {
      setNotice('sound', 'Sound is blocked until someone touches the screen once ' +
        '(a Chromium kiosk: start it with --autoplay-policy=no-user-gesture-required; Safari always needs the touch).', 'warn');
    }
  }
  function onUserGesture() {
    CallKit.audioContext();
    if (!el.soundOverlay.hidden) playRemoteAudio();
  }
  for (const t of ['pointerdown', 'keydown']) document.addEventListener(t, onUserGesture, { capture: true });
  // One tap unlocks sound for the page's lifetime. The notice goes once the tap is over: gone at
  // the press, it would move the big button (below it) from under the visitor's finger.
  const liftSoundNotice = () => { if (notices.has('sound')) setNotice('sound', ''); };
  for (const t of ['click', 'keydown']) document.addEventListener(t, liftSoundNotice, { capture: true });

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
  el.enableSoundBtn.addEventListener('click', () => { CallKit.audioContext(); playRemoteAudio(); });

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
  document.addEventListener('visibilitychange', () => { if (document.visibilityState === 'visible') keepAwake(); });

  // ---------------------------------------------------------------- signaling socket
  const sig = SignalKit.socket({
    tag: TAG,
    serverWord: 'intercom',
    query: () => (app.config ? { id: app.config.id, room: app.config.room } : null),
    connectingText: () => `Connecting to the intercom as ${app.config.id}…`,
    setConn, setStatus,
    onWelcome, onPeerJoined, onPeerLeft,
    onMessage: (msg) => calls.onMessage(msg), onUnreachable, onClosed, onNotice,
  });
  const send = sig.send;

  function onClosed(code, reason, fatal, lastError) {
    if (code === 4000 || fatal === 'invalid-id' || fatal === 'invalid-room' || fatal === 'invalid-token') {
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
        { label: 'Use this window', fn: () => sig.start() });
      setNotice('replaced', `The name “${app.config.id}” is now used by another window of this browser; this one stopped.`, 'warn');
      return;
    }
    if (code === 4002 || fatal === 'id-taken') {
      // A kiosk keeps trying: the other device may be this station's own dead connection from before a reboot.
      setNotice('id-taken', `The name “${app.config.id}” is in use by another device. ` +
        'This station keeps retrying; give it another name with door.html?setup=1 if the other device stays.', 'error');
      sig.reconnect(`The name “${app.config.id}” is taken`);
      return;
    }
    sig.reconnect(sig.closeText(code, fatal));
  }

  // ---------------------------------------------------------------- server messages
  // From the daemon itself (no `from`): {"type":"door-opened","by":"kitchen","call":"c1"} when
  // whoever answered this station's ring opened its door (the door's command has started).
  function onNotice(msg) {
    if (msg.type !== 'door-opened') return;
    const by = typeof msg.by === 'string' && ID_RE.test(msg.by) ? msg.by : null;
    app.opened += 1;
    showResult('opened', 'Door opened', OPENED_SHOW_MS);
    setStatus(by ? `Door opened by ${by}.` : 'Door opened.', 'ok');
  }

  function onWelcome(msg) {
    app.myId = typeof msg.id === 'string' ? msg.id : app.config.id;
    app.room = typeof msg.room === 'string' ? msg.room : app.config.room;
    setNotice('id-taken', '');
    setNotice('replaced', '');
    el.me.textContent = `${app.myId} · ${app.room}`;
    if (rings) rings.render();
    setConn('connected');
    if (call) setStatus(`Back online. Still in the call with ${call.peer || targetText()}.`);
    else setReadyStatus();
  }

  function setReadyStatus() {
    if (app.conn === 'connected') setStatus(`Online as ${app.myId} in ${app.room}. The button calls ${targetText()}.`, 'ok');
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
  function getMedia(media) {
    return SignalKit.getMedia(media, { onAudioOnly: () => setNotice('camera', 'No usable camera: calls are audio only.', 'warn') });
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

  function showLocal(c) {
    if (c.localStream && c.localStream.getVideoTracks().length) {
      el.localVideo.srcObject = c.localStream;
      el.localVideo.hidden = false;
      el.localVideo.play().catch(() => { /* muted video; ignore */ });
    }
  }

  // ---------------------------------------------------------------- calls
  const calls = CallKit.engine({
    tag: TAG, send, current: () => call, iceServers: () => sig.iceServers,
    onCallRequest, onCallAccept, onCallReject, onHangup,
    media: { remoteAudio: el.remoteAudio, remoteVideo: el.remoteVideo, localVideo: el.localVideo, placeholder: el.placeholder },
    playAudio: playRemoteAudio,
    fail: (c, why) => {
      setStatus(`Call failed: ${why}.`, 'error');
      endCall('failed', 'Call failed', { notify: true, reason: 'failed' }, false);
    },
    ice: onIceState,
    // The panel's chat line (data channel): shown big, e.g. "Please leave the parcel at the door".
    chat: (c, text) => {
      el.message.textContent = text.slice(0, 500);
      el.message.hidden = !text;
    },
    dropped: () => endCall('ended', 'Call ended', { notify: true }),
  });

  function newCall(fields) {
    return calls.newCall({ group: false, targets: new Set(), replies: new Map(), media: 'video', ...fields });
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
    CallKit.audioContext(); // the press is a user gesture: unlock sound
    clearResult();
    const group = app.config.call === '*';
    if (group && sig.peers.size === 0) {
      showResult('nobody', 'Nobody is online to answer');
      return;
    }
    const c = call = newCall({ id: SignalKit.randomHex(8), role: 'caller', group, peer: group ? null : app.config.call, media: 'video' });
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
    if (call !== c) { SignalKit.stopStream(stream); return; } // cancelled meanwhile
    c.localStream = stream;
    if (!stream.getVideoTracks().length) c.media = 'audio';
    showLocal(c);
    const req = { type: 'call-request', call: c.id, media: c.media };
    // Who is at the door, seen before anyone answers (at most a short wait).
    const picture = await CallKit.snapshot(stream, app.myId);
    if (call !== c) return; // cancelled meanwhile
    if (picture) req.snapshot = picture;
    if (group) {
      c.targets = new Set(sig.peers);
      if (c.targets.size === 0) { endCall('nobody', 'Nobody is online to answer', { notify: false }); return; }
      send({ ...req, to: '*', ring: 'room' });
    } else {
      c.targets = new Set([c.peer]);
      send({ ...req, to: c.peer });
    }
    c.signaled = true;
    CallKit.startTone(RINGBACK);
    c.timer = setTimeout(() => {
      if (call === c && app.state === 'ringing') endCall('no-answer', 'No answer', { notify: true, reason: 'no-answer' });
    }, RING_TIMEOUT_MS);
  }

  function onCallAccept(msg) {
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
    CallKit.stopTone();
    if (c.group) {
      for (const p of c.targets) {
        if (p !== c.peer) send({ type: 'hangup', to: p, call: c.id, reason: 'answered-elsewhere', answeredBy: c.peer });
      }
    }
    if (!calls.open(c, true)) return;
    enterCall(c);
    calls.sendOffer(c);
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
        calls.close(c, { notify: false });
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
    if (call !== c) { SignalKit.stopStream(stream); return; } // the caller gave up meanwhile
    c.localStream = stream;
    if (!calls.open(c, false)) return;
    showLocal(c);
    enterCall(c);
    send({ type: 'call-accept', to: from, call: c.id, media });
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
    if (!calls.matches(c, msg)) return;
    if (msg.reason === 'failed') endCall('failed', 'Call failed', { notify: false });
    else endCall('ended', 'Call ended', { notify: false });
  }

  function onIceState(c, state, first) {
    switch (state) {
      case 'connected':
      case 'completed':
        el.headline.textContent = 'Connected — speak now';
        el.subline.textContent = c.peer;
        if (first) setStatus(`In a call with ${c.peer}.`, 'ok');
        break;
      case 'disconnected':
        el.headline.textContent = 'Connection interrupted…';
        setStatus(`The connection to ${c.peer} is interrupted; trying to recover…`, 'warn');
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
    calls.startConnectTimer(c);
  }

  // End the call (or the ringing) and go back to ready. notify: tell the other side(s).
  function endCall(result, resultText, { notify = true, reason } = {}, updateStatus = true) {
    const c = call;
    if (!c) return;
    call = null;
    calls.close(c, { notify, reason });
    el.soundOverlay.hidden = true;
    delete document.body.dataset.sound;
    setState(idleState());
    // "Door opened" matters more to the visitor than "Call ended": it stays its time.
    const opened = document.body.dataset.result === 'opened';
    if (result && !(opened && result === 'ended')) showResult(result, resultText);
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
    CallKit.audioContext();
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
    get peers() { return Array.from(sig.peers); },
    get currentCall() {
      return call ? { id: call.id, peer: call.peer, role: call.role, group: call.group, media: call.media,
        targets: Array.from(call.targets), connected: call.connected } : null;
    },
    get localStream() { return call ? call.localStream : null; },
    get remoteStream() { return call ? call.remoteStream : null; },
    get recentRings() { return rings ? rings.entries : []; },
    /** How many times the daemon said this station's door was opened since the page loaded. */
    get opened() { return app.opened; },
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
    if (!SignalKit.mediaAvailable()) {
      setState('error');
      document.body.dataset.error = 'insecure';
      setStatus('Not a secure context: calls are impossible here.', 'error');
      // With the https address the daemon gives (it answers at once; a guess if it cannot), and
      // the links to it and to trust.html.
      SignalKit.httpsReady.then(() => setNotice('insecure', insecureText(), 'error', null, SignalKit.secureLinks()));
      return;
    }
    // Without WebRTC the station still goes online: its button still rings the house (and the
    // house's MQTT, webhooks and ntfy), but no call can connect, and the screen says so.
    if (!SignalKit.webrtcAvailable()) setNotice('webrtc', SignalKit.NO_WEBRTC, 'error');
    setState('offline');
    // Recent rings of this station's room, beside the big button.
    if (!rings) {
      rings = CallKit.recentRings({
        box: el.recent, list: el.ringsList, live: el.ringsLive, max: 8,
        room: () => app.room || (app.config && app.config.room),
      });
    } else rings.render();
    sig.start();
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
