// Intercom page: pick a name, see who is online, call them (WebRTC), chat, and open the door
// from a call with a door station this page answered (POST /api/door/open; see "open the door").
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
    callDoor: $('call-door'), doorForm: $('door-form'), doorPinRow: $('door-pin-row'), doorPin: $('door-pin'),
    doorOpenBtn: $('door-open-btn'), doorNote: $('door-note'),
    doorAfter: $('door-after'), doorAfterTitle: $('door-after-title'), doorUntil: $('door-until'),
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
    renderDoor();
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
    if (answered && answered.by !== app.myId) dropAnswered(); // answered under another name
    loadDoors(); // the daemon may have restarted with other doors
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
    // The door rings anew: the daemon lets only the answer to its current ring open it.
    if (answered && answered.door === from && msg.call !== answered.call) dropAnswered();
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
    loadDoors(); // is the caller a door station this page could open?
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
    // If the caller is a door station (GET /api/door), this answer lets this page open it.
    dropAnswered();
    answered = { door: c.peer, call: c.id, by: app.myId, ended: null, timer: null };
    renderDoor();
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
      // Our accept lost the race (the door took another): the right to open is theirs.
      if (answered && answered.call === call.id && answered.door === p) dropAnswered();
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
    // After a call with a door, Open door stays for the daemon's window.
    if (answered && answered.call === c.id && answered.door === c.peer && answered.ended === null) doorCallEnded(answered);
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

  // ---------------------------------------------------------------- open the door
  // GET /api/door names the door stations that have an opener, the proof opening needs (pin,
  // key, pin-or-key or nothing) and the window. POST /api/door/open opens one: the daemon lets
  // only the peer that answered the door's current ring open it, over the token it answered with,
  // during the call and `window` s after it ends. The proof is a PIN typed here, or a device key
  // the installer gave this browser once as #door-key=KEY at the end of the page's address (kept
  // in localStorage, sent instead of the PIN). Neither ever goes to the console or the status line.
  const LS_DOOR_KEY = 'intercom.door-key';
  const DOOR_KEY_RE = /^[\x21-\x7e]{16,128}$/;  // as --door-keys-file takes them
  const DOOR_OPEN_TIMEOUT_MS = 30000;           // the daemon answers when the door's command ends
  const NEEDS = new Set(['pin', 'key', 'pin-or-key', 'nothing']);
  const doorInfo = { doors: new Set(), needs: 'nothing', windowMs: 30000 };
  // The ring of a door (or of anyone: /api/door may say so later) this page answered last:
  // {door, call, by, ended: ms since the epoch | null while the call lasts, timer}
  let answered = null;
  let doorBusy = false;      // a POST is on its way
  let doorLoading = null;    // the GET on its way

  function loadDoors() {
    if (doorLoading) return doorLoading;
    doorLoading = (async () => {
      try {
        const r = await fetch('/api/door', { cache: 'no-store' });
        const info = r.ok ? await r.json() : { doors: [] };
        const list = info && Array.isArray(info.doors) ? info.doors : [];
        doorInfo.doors = new Set(list.filter((d) => typeof d === 'string' && ID_RE.test(d)));
        doorInfo.needs = info && NEEDS.has(info.needs) ? info.needs : 'nothing';
        const win = info && info.window;
        doorInfo.windowMs = Number.isFinite(win) && win > 0 && win <= 3600 ? win * 1000 : 30000;
      } catch (_) { /* keep what we knew: the daemon decides anyway */ }
      doorLoading = null;
      renderDoor();
    })();
    return doorLoading;
  }

  function doorKey() {
    const key = load(LS_DOOR_KEY);
    return key && DOOR_KEY_RE.test(key) ? key : null;
  }
  function forgetDoorKey() { try { localStorage.removeItem(LS_DOOR_KEY); } catch (_) { /* ignore */ } }

  // The installer's link: #door-key=KEY (percent-encoded where needed). Kept, and taken out of
  // the address at once, so that it is in no bookmark, shared link or screenshot of the address bar.
  function takeDoorKey() {
    const parts = location.hash.replace(/^#/, '').split('&');
    const at = parts.findIndex((part) => part.startsWith('door-key='));
    if (at < 0) return;
    let key = '';
    try { key = decodeURIComponent(parts[at].slice('door-key='.length)); } catch (_) { /* a broken escape */ }
    parts.splice(at, 1);
    const rest = parts.filter(Boolean).join('&');
    history.replaceState(history.state, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`);
    if (DOOR_KEY_RE.test(key)) {
      store(LS_DOOR_KEY, key);
      setStatus('This device now keeps a key to open the door from a call.', 'ok');
    } else {
      setStatus('The door key in the address was not kept: a key is 16 to 128 printable characters.', 'warn');
    }
    renderDoor();
  }

  function dropAnswered() {
    if (!answered) return;
    clearTimeout(answered.timer);
    answered = null;
    renderDoor();
  }

  function doorCallEnded(a) {
    a.ended = Date.now();
    clearTimeout(a.timer);
    a.timer = setTimeout(() => { if (answered === a) dropAnswered(); }, doorInfo.windowMs);
  }

  // Where Open door shows now: 'call' (in the call card), 'after' (its own card, within the
  // window after the call), or null.
  function doorPlace() {
    const a = answered;
    if (!a || !doorInfo.doors.has(a.door) || a.by !== app.myId) return null;
    if (a.ended === null) return call && call.id === a.call && call.peer === a.door && app.state === 'in-call' ? 'call' : null;
    return Date.now() - a.ended < doorInfo.windowMs && app.state === 'idle' ? 'after' : null;
  }

  // The PIN field shows when a PIN is the proof: needs pin, or pin-or-key without a key here.
  function doorProof() {
    const key = doorKey();
    switch (doorInfo.needs) {
      case 'pin': return 'pin';
      case 'key': return key ? 'key' : 'no-key';
      case 'pin-or-key': return key ? 'key' : 'pin';
      default: return 'nothing';
    }
  }

  function renderDoor() {
    const place = doorPlace();
    el.doorForm.hidden = !place;
    el.doorAfter.hidden = place !== 'after';
    if (!place) {
      el.doorPin.value = '';
      return;
    }
    const host = place === 'call' ? el.callDoor : el.doorAfter;
    if (el.doorForm.parentElement !== host) host.append(el.doorForm);
    const proof = doorProof();
    el.doorPinRow.hidden = proof !== 'pin';
    el.doorOpenBtn.disabled = doorBusy || proof === 'no-key';
    el.doorOpenBtn.textContent = doorBusy ? 'Opening…' : 'Open door';
    el.doorForm.setAttribute('aria-busy', String(doorBusy));
    el.doorNote.hidden = proof !== 'no-key';
    el.doorNote.textContent = proof === 'no-key'
      ? 'This device has no key to open the door: the installer gives it one with a link.' : '';
    if (place === 'after') {
      const a = answered;
      const until = new Date(a.ended + doorInfo.windowMs);
      const hms = [until.getHours(), until.getMinutes(), until.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
      el.doorAfterTitle.textContent = `After the call with ${a.door}`;
      el.doorUntil.textContent = `The call ended. Open door (until ${hms}).`;
    }
  }

  async function openDoor() {
    const a = answered;
    if (!a || doorBusy || !doorPlace()) return;
    const proof = doorProof();
    const body = { door: a.door, id: app.myId, token: SignalKit.token() };
    if (proof === 'pin') {
      const pin = el.doorPin.value.trim();
      if (!pin) {
        setStatus('Type the PIN to open the door.', 'warn');
        el.doorPin.focus();
        return;
      }
      body.pin = pin;
    } else if (proof === 'key') {
      body.key = doorKey();
    } else if (proof === 'no-key') {
      return;
    }
    doorBusy = true;
    renderDoor();
    setStatus(`Opening ${a.door}…`);
    const ctl = typeof AbortController === 'function' ? new AbortController() : null;
    const timer = setTimeout(() => { if (ctl) ctl.abort(); }, DOOR_OPEN_TIMEOUT_MS);
    let status = 0;
    let answer = {};
    try {
      const r = await fetch('/api/door/open', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        cache: 'no-store',
        signal: ctl ? ctl.signal : undefined,
      });
      status = r.status;
      answer = await r.json().catch(() => ({}));
    } catch (e) {
      answer = { error: e && e.name === 'AbortError' ? 'the intercom did not answer in time' : 'the intercom could not be reached' };
    } finally {
      clearTimeout(timer);
    }
    doorBusy = false;
    el.doorPin.value = '';
    if (!answer || typeof answer !== 'object') answer = {};
    if (status === 200 && answer.opened) {
      setStatus('Door opened.', 'ok');
      renderDoor();
      return;
    }
    const why = typeof answer.error === 'string' && answer.error ? answer.error.slice(0, 200) : `the intercom answered ${status}`;
    const reason = typeof answer.reason === 'string' ? answer.reason : '';
    if (reason === 'wrong-pin' && proof === 'key') {
      // The installer took this device's key back.
      forgetDoorKey();
      setStatus(`Door not opened: this device's door key was refused, so it was forgotten${doorInfo.needs === 'pin-or-key' ? '. Type the PIN instead' : ''}.`, 'error');
    } else {
      setStatus(`Door not opened: ${why}.`, 'error');
    }
    if (reason === 'not-your-call') dropAnswered(); // the right is gone (the door rang again, or the window closed)
    else if (reason === 'unknown-door') { dropAnswered(); loadDoors(); }
    renderDoor();
    if (!el.doorForm.hidden && !el.doorPinRow.hidden) el.doorPin.focus();
  }

  el.doorForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    openDoor();
  });
  window.addEventListener('hashchange', takeDoorKey);

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
    get door() {
      return { place: doorPlace(), doors: Array.from(doorInfo.doors), needs: doorInfo.needs, hasKey: !!doorKey(),
        answered: answered ? { door: answered.door, call: answered.call, ended: answered.ended } : null };
    },
    placeCall, acceptCall,
    hangup: () => { if (call) endCall(`Call with ${call.peer} ended.`, 'info', { notify: true }); },
  };

  // ---------------------------------------------------------------- start
  setState('idle');
  setConn('disconnected');
  takeDoorKey();
  loadDoors();
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
