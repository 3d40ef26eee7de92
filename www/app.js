// Intercom page: pick a name, see who is online, call them (WebRTC), chat.
// Plain JavaScript, no build step. Talks to intercomd over /ws (see SPEC.md) through
// signal.js; the one-to-one call machinery is call.js's, shared with the door station.
'use strict';

(() => {
  // ---------------------------------------------------------------- constants
  const { ID_RE, load, store } = SignalKit;
  const LS_NAME = 'intercom.name';    // shared with the room page
  const RING_TIMEOUT_MS = 30000;      // no answer within this: the call failed
  const MAX_CHAT_LINES = 500;
  const TAG = '[intercom]';
  // Ring: two short chimes every 2 s (and the phone vibrates); ringback: a 1 s tone every 4 s.
  const RING = { volume: 0.25, everyMs: 2000, beeps: [[0, 0.35, [880, 1320]], [0.5, 0.35, [660, 990]]], vibrate: [400, 200, 400] };
  const RINGBACK = { volume: 0.08, everyMs: 4000, beeps: [[0, 1.0, [425]]] };

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
    incomingPicture: $('incoming-picture'),
    acceptBtn: $('accept-btn'), rejectBtn: $('reject-btn'),
    outgoing: $('outgoing'), outgoingTo: $('outgoing-to'), outgoingKind: $('outgoing-kind'), cancelBtn: $('cancel-btn'),
    call: $('call'), callPeer: $('call-peer'), callState: $('call-state'), callAvatar: $('call-avatar'),
    remoteVideo: $('remote-video'), localVideo: $('local-video'), audioOnly: $('audio-only'),
    remoteAudio: $('remote-audio'), unblockAudioBtn: $('unblock-audio-btn'),
    muteBtn: $('mute-btn'), hangupBtn: $('hangup-btn'),
    chatLog: $('chat-log'), chatForm: $('chat-form'), chatInput: $('chat-input'), chatSend: $('chat-send'),
    recent: $('recent'), ringsList: $('rings-list'), ringsLive: $('rings-live'),
  };
  const baseTitle = document.title;

  // ---------------------------------------------------------------- storage
  // This tab's own name survives a reload of the tab; localStorage holds the default for new tabs.
  function loadTab() { try { return sessionStorage.getItem(LS_NAME); } catch (_) { return null; } }
  function storeTab(value) { try { sessionStorage.setItem(LS_NAME, value); } catch (_) { /* ignore */ } }

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
  };
  // { id, peer, media, role, pc, dc, localStream, remoteStream, pending, timer, signaled, connected[, accepting] }
  let call = null;

  // ---------------------------------------------------------------- status UI
  const setStatus = SignalKit.statusLine({ box: el.status, text: el.statusText, button: el.retryBtn, tag: TAG });

  function setConn(c) {
    app.conn = c;
    SignalKit.showConn(el.conn, c);
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

  SignalKit.showBrowserWarning(el.secureWarning);

  // ---------------------------------------------------------------- signaling socket
  const sig = SignalKit.socket({
    tag: TAG,
    query: () => (app.name ? { id: app.name, room: pageRoom } : null),
    connectingText: () => `Connecting as ${app.name}…`,
    setConn, setStatus,
    onWelcome, onPeerJoined: renderPeers, onPeerLeft, onPeers: renderPeers,
    onMessage: (msg) => calls.onMessage(msg), onUnreachable, onClosed,
  });
  const send = sig.send;

  function onClosed(code, reason, fatal, lastError) {
    renderPeers();
    if (code === 4000 || fatal === 'invalid-id' || fatal === 'invalid-room' || fatal === 'invalid-token') {
      setConn('closed');
      const text = lastError || `The server refused this name, room or token${reason ? ` (${reason})` : ''}.`;
      setStatus(`${text} Pick another name.`, 'error');
      showNameError(text);
      showLogin();
      return;
    }
    if (code === 4002 || fatal === 'id-taken') {
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
        { label: 'Use it here', fn: () => sig.start() });
      return;
    }
    sig.reconnect(sig.closeText(code, fatal));
  }

  // ---------------------------------------------------------------- server messages
  function onPeerLeft(id) {
    renderPeers();
    if (call && call.peer === id) {
      const text = app.state === 'ringing' ? `${id} went offline: missed call.` : `${id} went offline: the call ended.`;
      endCall(text, 'warn', { notify: false });
    }
  }

  function onWelcome(msg) {
    app.myId = typeof msg.id === 'string' ? msg.id : app.name;
    app.room = typeof msg.room === 'string' ? msg.room : 'lobby';
    store(LS_NAME, app.myId);
    storeTab(app.myId);
    showNameError('');
    el.login.hidden = true;
    el.me.hidden = false;
    el.me.textContent = app.myId;
    el.roomLabel.textContent = app.room === 'lobby' ? '' : `in ${app.room}`;
    rings.render(); // the rings of the room the daemon put us in
    setConn('connected');
    setState(app.state); // re-evaluates which cards show
    if (call) setStatus(`Back online. Still in a call with ${call.peer}.`);
    else setStatus(`Online as ${app.myId}.`, 'ok');
  }

  // A message of ours could not be delivered to ref.to.
  function onUnreachable(ref) {
    if (call && ref.to === call.peer && ref.type !== 'hangup' && ref.type !== 'call-reject') {
      endCall(`${call.peer} is not reachable any more: the call ended.`, 'error', { notify: false });
    } else if (ref.type === 'call-request') {
      setStatus(`${ref.to || 'That peer'} is not online.`, 'warn');
    }
  }

  // ---------------------------------------------------------------- peer list
  function renderPeers() {
    const ids = Array.from(sig.peers).sort((a, b) => a.localeCompare(b));
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

  // ---------------------------------------------------------------- sound, media
  // Unlock audio on the first tap so a later incoming call can ring.
  for (const t of ['pointerdown', 'keydown']) document.addEventListener(t, () => CallKit.audioContext(), { capture: true });

  function getMedia(media) {
    return SignalKit.getMedia(media, { onAudioOnly: () => setStatus('No usable camera: continuing with audio only.', 'warn') });
  }
  function mediaErrorText(e, media) {
    return SignalKit.mediaErrorText(e, media === 'video' ? 'microphone and camera' : 'microphone');
  }

  function playRemoteAudio() {
    const p = el.remoteAudio.play();
    if (p && p.catch) {
      p.then(() => { el.unblockAudioBtn.hidden = true; })
        .catch(() => { el.unblockAudioBtn.hidden = false; });
    }
  }
  el.unblockAudioBtn.addEventListener('click', playRemoteAudio);

  // ---------------------------------------------------------------- calls
  const calls = CallKit.engine({
    tag: TAG, send, current: () => call, iceServers: () => sig.iceServers,
    onCallRequest, onCallAccept, onCallReject, onHangup,
    media: { remoteAudio: el.remoteAudio, remoteVideo: el.remoteVideo, localVideo: el.localVideo, placeholder: el.audioOnly },
    playAudio: playRemoteAudio,
    fail: (c, why) => endCall(`Call failed: ${why}.`, 'error', { notify: true, reason: 'failed' }),
    ice: onIceState,
    chatOpen: (c, open) => enableChat(open),
    chat: (c, text) => addChat(c.peer, text, 'them'),
    dropped: (c) => endCall(`The call with ${c.peer} ended.`, 'info', { notify: true }),
  });

  async function placeCall(peer, media) {
    if (call || app.conn !== 'connected' || app.state !== 'idle') return;
    if (!ID_RE.test(peer)) return;
    // A browser without WebRTC (a WebKit build without it) says so at once instead of ringing
    // someone it could never talk to. On an insecure page getMedia below says the more useful
    // thing (open the https page), before anyone is rung too.
    if (typeof RTCPeerConnection !== 'function' && SignalKit.mediaAvailable()) {
      setStatus('Call failed: this browser cannot make WebRTC calls (it has no RTCPeerConnection).', 'error');
      return;
    }
    media = media === 'video' ? 'video' : 'audio';
    CallKit.audioContext();
    const c = call = calls.newCall({ id: SignalKit.randomHex(8), peer, media, role: 'caller' });
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
    if (call !== c) { SignalKit.stopStream(stream); return; } // cancelled meanwhile
    c.localStream = stream;
    const req = { type: 'call-request', to: peer, call: c.id, media };
    // With the camera on, the one rung sees who calls before answering.
    const picture = media === 'video' ? await CallKit.snapshot(stream, app.myId) : null;
    if (call !== c) return; // cancelled meanwhile
    if (picture) req.snapshot = picture;
    send(req);
    c.signaled = true;
    CallKit.startTone(RINGBACK);
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
        calls.close(c, { notify: false });
        startRinging(from, media, msg.call, group);
        acceptCall();
        return;
      }
      send({ type: 'call-reject', to: from, call: msg.call, reason: 'busy' });
      return;
    }
    startRinging(from, media, msg.call, group, CallKit.snapshotUrl(msg.snapshot));
  }

  function startRinging(from, media, callId, group = false, picture = null) {
    const c = call = calls.newCall({
      id: typeof callId === 'string' ? callId : null, peer: from, media, role: 'callee', signaled: true, accepting: false,
    });
    el.incomingFrom.textContent = from;
    el.incomingKind.textContent = `is calling ${group ? 'everyone' : 'you'} (${media})…`;
    // Who it is, before answering: the caller's own still, when it sent one.
    el.incomingPicture.hidden = !picture;
    if (picture) {
      el.incomingPicture.src = picture;
      el.incomingPicture.alt = `${from}, as its camera saw it just now`;
    } else {
      el.incomingPicture.removeAttribute('src');
    }
    el.acceptBtn.disabled = false;
    el.rejectBtn.disabled = false;
    setState('ringing');
    setStatus(`Incoming ${media} call from ${from}.`);
    document.title = `📞 ${from} is calling – ${baseTitle}`;
    CallKit.startTone(RING);
    showIfSilent();
    c.timer = setTimeout(() => {
      if (call === c && app.state === 'ringing') {
        endCall(`Missed call from ${from}.`, 'warn', { notify: true, reason: 'no-answer' });
      }
    }, RING_TIMEOUT_MS);
  }

  // A page that goes online by itself (a reload, the installed app) has had no tap, and Safari
  // (like Chromium without its autoplay flag) keeps its sound off until one: say so on the
  // ringing card rather than ring in silence. It fades once the sound runs, but keeps its room:
  // the tap that starts the sound is usually the tap on Accept, and a card that shrank between
  // that tap's press and its release would move Accept from under the finger (a lost tap; the
  // WebKit suite caught it).
  function showIfSilent() {
    const ctx = CallKit.audioContext();
    const tapped = navigator.userActivation && navigator.userActivation.hasBeenActive;
    const silent = () => !!ctx && ctx.state !== 'running';
    const hint = document.getElementById('ring-silent');
    hint.hidden = !silent() || tapped;
    hint.style.visibility = '';
    if (ctx && !hint.hidden) {
      ctx.addEventListener('statechange', () => { hint.style.visibility = silent() ? '' : 'hidden'; }, { once: true });
    }
  }

  async function acceptCall() {
    const c = call;
    if (!c || c.role !== 'callee' || app.state !== 'ringing' || c.accepting) return;
    c.accepting = true;
    el.acceptBtn.disabled = true;
    clearTimeout(c.timer);
    CallKit.stopTone();
    CallKit.audioContext();
    setStatus(SignalKit.mediaAvailable() ? 'Starting the microphone…' : SignalKit.insecureText());
    let stream;
    try {
      stream = await getMedia(c.media);
    } catch (e) {
      if (call === c) endCall(mediaErrorText(e, c.media), 'error', { notify: true, reason: 'media-error' });
      return;
    }
    if (call !== c) { SignalKit.stopStream(stream); return; } // caller gave up meanwhile
    c.localStream = stream;
    if (!calls.open(c, false)) return;
    enterCall(c);
    send({ type: 'call-accept', to: c.peer, call: c.id, media: c.media });
    calls.startConnectTimer(c);
  }

  function onCallAccept(msg) {
    if (!calls.matches(call, msg) || call.role !== 'caller' || app.state !== 'calling' || !call.localStream) return;
    const c = call;
    clearTimeout(c.timer);
    CallKit.stopTone();
    if (!calls.open(c, true)) return;
    enterCall(c);
    calls.startConnectTimer(c);
    calls.sendOffer(c);
  }

  function onCallReject(msg) {
    if (!calls.matches(call, msg) || call.role !== 'caller' || app.state !== 'calling') return;
    const p = call.peer;
    let text;
    switch (msg.reason) {
      case 'busy': text = `${p} is busy in another call.`; break;
      case 'no-answer': text = `${p} did not answer.`; break;
      case 'media-error': text = `${p} could not start their microphone or camera.`; break;
      case 'left': text = `${p} closed the intercom page.`; break;
      // call.js sends it when the callee accepted but could not open a connection at all.
      case 'failed': text = `Call failed: ${p}'s browser could not start the call.`; break;
      default: text = `${p} rejected the call.`;
    }
    endCall(text, msg.reason === 'failed' ? 'error' : 'warn', { notify: false });
  }

  function onHangup(msg) {
    if (!calls.matches(call, msg)) return;
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

  function onIceState(c, state, first) {
    switch (state) {
      case 'checking':
        el.callState.textContent = 'connecting';
        break;
      case 'connected':
      case 'completed':
        el.callState.textContent = 'connected';
        el.callState.dataset.level = 'ok';
        if (first) setStatus(`In call with ${c.peer}.`, 'ok');
        break;
      case 'disconnected':
        el.callState.textContent = 'interrupted';
        el.callState.dataset.level = 'warn';
        setStatus(`The connection to ${c.peer} is interrupted; trying to recover…`, 'warn');
        break;
      default:
        break;
    }
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

  // ---------------------------------------------------------------- chat, mute
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
    call = null;
    calls.close(c, { notify, reason });
    el.unblockAudioBtn.hidden = true;
    enableChat(false);
    delete document.body.dataset.chat;
    delete document.body.dataset.muted;
    document.title = baseTitle;
    setState('idle');
    if (text) setStatus(text, level);
  }

  // ---------------------------------------------------------------- buttons
  el.nameForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    CallKit.audioContext();
    const v = el.nameInput.value.trim();
    if (!ID_RE.test(v)) {
      showNameError('Use 1–64 characters: letters A–Z a–z, digits 0–9 and . _ ~ -');
      el.nameInput.focus();
      return;
    }
    showNameError('');
    app.name = v;
    sig.start();
  });
  el.changeNameBtn.addEventListener('click', () => {
    if (call) return;
    sig.close();
    setConn('disconnected');
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

  // ---------------------------------------------------------------- recent rings
  // The daemon's call log for this page's room (the one it is in, or will be in once online).
  const rings = CallKit.recentRings({
    box: el.recent, list: el.ringsList, live: el.ringsLive, room: () => app.room || pageRoom || 'lobby',
  });

  // ---------------------------------------------------------------- test / debug handle
  window.intercom = {
    get pc() { return call ? call.pc : null; },
    get dc() { return call ? call.dc : null; },
    get state() { return app.state; },
    get conn() { return app.conn; },
    get id() { return app.myId; },
    get room() { return app.room; },
    get peers() { return Array.from(sig.peers); },
    get iceServers() { return sig.iceServers; },
    get currentCall() { return call ? { id: call.id, peer: call.peer, media: call.media, role: call.role, connected: call.connected } : null; },
    get localStream() { return call ? call.localStream : null; },
    get remoteStream() { return call ? call.remoteStream : null; },
    get recentRings() { return rings.entries; },
    placeCall, acceptCall,
    hangup: () => { if (call) endCall(`Call with ${call.peer} ended.`, 'info', { notify: true }); },
  };

  // ---------------------------------------------------------------- start
  setState('idle');
  setConn('disconnected');
  // A second tab that went online under the remembered name would take it from the first.
  const usedByAnotherTab = SignalKit.tabNames((name) => name === app.name && app.conn !== 'disconnected' && app.conn !== 'closed');

  const tabName = loadTab();
  const saved = tabName || load(LS_NAME);
  if (saved && ID_RE.test(saved)) {
    el.nameInput.value = saved;
    if (tabName) {
      app.name = saved; // a reload of this tab: take the name back at once
      sig.start();
    } else {
      usedByAnotherTab(saved).then((used) => {
        if (app.name) return; // the user was quicker
        if (used) {
          setStatus(`“${saved}” is online in another tab of this browser. Pick another name for this tab.`, 'warn');
          showLogin();
          el.nameInput.select();
        } else {
          app.name = saved;
          sig.start();
        }
      });
    }
  } else {
    showLogin(false);
  }
})();
