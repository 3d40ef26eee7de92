// Room page: a full-mesh group call (up to 6 people) in a named room, with screen sharing.
// Plain JavaScript, no build step. Talks to intercomd over /ws (see SPEC.md).
//
// Signaling (directed messages through the daemon; `room-` types so the intercom page
// in the same room ignores them):
//   room-offer / room-answer  {to, pc, sdp}        pc: the sender's id for its RTCPeerConnection
//   room-candidate            {to, pc, candidate}  trickled as found, never waiting for gathering
//   room-share-start          {to:'*'|id, seq, stream}  stream: msid of the screen track
//   room-share-stop           {to:'*', seq}
//   room-media                {to:'*'|id, mic, cam}
//   room-check                {to, pc, remote}     after a reconnect: "is our connection still yours?"
// Who offers: the newcomer offers to everyone in welcome.peers; members answer. Later changes
// (screen track added or removed) renegotiate with "perfect negotiation": negotiationneeded
// makes an offer, a collision is settled by id (the larger id is polite and rolls back).
// A peer connection that fails is rebuilt by the side with the smaller id (new `pc` id; the
// other side replaces its own connection when an offer with a new `pc` id arrives).
// After the signaling socket comes back, media that kept flowing is kept: each kept connection
// is confirmed with room-check, and a peer that no longer has it (it saw us leave) offers anew.
// Screen sharing: one sharer per room; each start carries seq = highest seq seen + 1, and the
// higher (seq, id) wins, so two people starting at once still end with exactly one sharer.
// The signaling socket, storage and media helpers are signal.js's.
'use strict';

(() => {
  // ---------------------------------------------------------------- constants
  const { ID_RE, load, store, randomHex, stopStream } = SignalKit;
  const LS_NAME = 'intercom.name';    // shared with the intercom page
  const MAX_PEOPLE = 6;               // full mesh: each page sends its media MAX_PEOPLE - 1 times
  const CONNECT_TIMEOUT_MS = 20000;   // a peer connection that is not connected by then has failed
  const SWEEP_AFTER_MS = 15000;       // after a reconnect, peers missing this long are gone
  const MAX_PC_RETRIES = 4;           // rebuilds of a failed connection to one peer
  const ICE_RESTART_AFTER_MS = 4000;  // "disconnected" this long: the smaller id restarts ICE
  const MAX_PENDING_CANDIDATES = 256;
  const TAG = '[room]';
  const VIDEO = { facingMode: 'user', width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 24, max: 30 } };
  // Getting the camera failed this way: try the microphone alone (else: listening only).
  const AUDIO_ONLY_ON = ['NotFoundError', 'NotReadableError', 'OverconstrainedError', 'NotAllowedError', 'AbortError'];

  // ---------------------------------------------------------------- elements
  const $ = (id) => document.getElementById(id);
  const el = {
    roomName: $('room-name'), me: $('me'), conn: $('conn'),
    status: $('status'), statusText: $('status-text'), retryBtn: $('retry-btn'),
    secureWarning: $('secure-warning'),
    start: $('start'), joinForm: $('join-form'), roomInput: $('room-input'), nameInput: $('name-input'),
    newRoomBtn: $('new-room-btn'), joinBtn: $('join-btn'), formError: $('form-error'),
    roomView: $('room-view'), stage: $('stage'), stageVideo: $('stage-video'), stageLabel: $('stage-label'),
    tiles: $('tiles'), unblockAudioBtn: $('unblock-audio-btn'),
    muteBtn: $('mute-btn'), cameraBtn: $('camera-btn'), shareBtn: $('share-btn'), leaveBtn: $('leave-btn'),
    roomLink: $('room-link'), copyLinkBtn: $('copy-link-btn'),
  };
  const baseTitle = document.title;

  // ---------------------------------------------------------------- state
  const app = {
    state: 'start',        // start | joining | in-room
    conn: 'disconnected',  // disconnected | connecting | connected | reconnecting | closed
    name: null,            // the id we ask for
    myId: null,            // the id the server confirmed
    room: null,
    presence: new Set(),   // ids in the room (any page), from welcome / peer-joined / peer-left
    joined: false,         // a welcome arrived since Join was pressed
  };
  let joinSeq = 0;         // bumps on every Join / Leave: stale async work checks it
  let localStream = null;  // microphone (+ camera); null when listening only
  let listenOnly = false;
  const peers = new Map(); // id -> peer record (one RTCPeerConnection)
  const tiles = new Map(); // id -> { el, video, audio, name, badge, mic, cam }
  const failures = new Map(); // id -> rebuilds so far
  const share = { from: null, seq: 0, stream: null }; // the current screen share in the room
  let seqSeen = 0;
  let screen = null;       // { stream, track } while this page shares
  // One stream for every screen track this page sends, so receivers can tell the screen from
  // the camera by its msid (stream id) even across stop and restart.
  const screenContainer = new MediaStream();
  let sweepTimer = null;

  function inRoom() { return app.state === 'in-room'; }

  // ---------------------------------------------------------------- status UI
  const setStatus = SignalKit.statusLine({ box: el.status, text: el.statusText, button: el.retryBtn, tag: TAG });

  function setConn(c) {
    app.conn = c;
    document.body.dataset.conn = c;
    el.conn.textContent = c === 'connected' ? 'online' : (c === 'connecting' || c === 'reconnecting' ? 'connecting…' : 'offline');
    el.conn.dataset.level = c === 'connected' ? 'ok' : (c === 'connecting' || c === 'reconnecting' ? 'warn' : 'off');
  }

  function setState(s) {
    app.state = s;
    document.body.dataset.state = s;
    el.start.hidden = s !== 'start';
    el.roomView.hidden = s === 'start';
    el.me.hidden = s === 'start';
    el.roomName.hidden = s === 'start';
    renderControls();
  }

  function showFormError(text) {
    el.formError.textContent = text;
    el.formError.hidden = !text;
  }

  // ---------------------------------------------------------------- secure context
  function canShareScreen() {
    return !!navigator.mediaDevices && typeof navigator.mediaDevices.getDisplayMedia === 'function';
  }
  SignalKit.showBrowserWarning(el.secureWarning, 'You can still join to watch and listen. ');

  // ---------------------------------------------------------------- address bar
  function roomFromAddress() {
    const r = new URLSearchParams(location.search).get('room');
    return r && ID_RE.test(r) ? r : null;
  }
  function roomUrl(room) {
    const u = new URL(location.href);
    u.hash = '';
    u.search = '';
    u.searchParams.set('room', room);
    return u.toString();
  }
  function putRoomInAddress(room) {
    try { history.replaceState(null, '', roomUrl(room)); } catch (_) { /* file: or sandboxed */ }
    el.roomLink.href = roomUrl(room);
    el.roomLink.textContent = roomUrl(room);
  }

  // ---------------------------------------------------------------- signaling socket
  const sig = SignalKit.socket({
    tag: TAG,
    query: () => ({ id: app.name, room: app.room }),
    connectingText: () => `Joining room ${app.room} as ${app.name}…`,
    // The texts here are sentences of their own.
    retryText: (text, s) => `${text}. Reconnecting in ${s} s…`,
    setConn, setStatus,
    onWelcome, onPeerJoined, onPeerLeft, onPeers: onPeersList,
    onMessage, onUnreachable, onClosed,
  });
  const send = sig.send;

  function onClosed(code, reason, fatal, lastError) {
    if (app.state === 'start') return;
    if (code === 4000 || fatal === 'invalid-id' || fatal === 'invalid-room' || fatal === 'invalid-token') {
      const text = lastError || `The server refused this name or room${reason ? ` (${reason})` : ''}.`;
      leave(`${text} Pick another name or room.`, 'error');
      showFormError(text);
      return;
    }
    if (code === 4002 || fatal === 'id-taken') {
      leave(`The name “${app.name}” is already in use on this intercom. Pick another name.`, 'error');
      showFormError('This name is already in use: pick another one.');
      el.nameInput.focus();
      return;
    }
    if (code === 4006 || fatal === 'room-full') {
      leave(`This room is full: the server lets no more people into ${app.room}.`, 'error');
      return;
    }
    if (code === 4001) {
      leave(`“${app.name}” joined again from another tab or window of this browser, so this page left the room.`, 'warn');
      return;
    }
    let text = sig.closeText(code, fatal);
    if (app.joined && peers.size) text += '. Calls already connected keep going meanwhile';
    sig.reconnect(text);
  }

  // Directed messages (msg.from is set by the server).
  function onMessage(msg) {
    switch (msg.type) {
      case 'room-offer':
      case 'room-answer':
      case 'room-candidate': onSignal(msg); break;
      case 'room-share-start': onShareStart(msg); break;
      case 'room-share-stop': onShareStop(msg); break;
      case 'room-media': onMediaState(msg); break;
      case 'room-check': onCheck(msg); break;
      case 'call-request':
        // Someone on the intercom page calls us: we are busy in a group call.
        send({ type: 'call-reject', to: msg.from, call: msg.call, reason: 'busy' });
        break;
      default: break; // not ours
    }
  }

  function validPeer(id) { return typeof id === 'string' && ID_RE.test(id) && id !== app.myId; }

  function onWelcome(msg) {
    if (app.state === 'start') return;
    const firstWelcome = !app.joined;
    app.myId = typeof msg.id === 'string' ? msg.id : app.name;
    const others = (Array.isArray(msg.peers) ? msg.peers : []).filter(validPeer);
    if (others.length >= MAX_PEOPLE) {
      leave(`This room is full (${MAX_PEOPLE} people max).`, 'error');
      return;
    }
    app.joined = true;
    store(LS_NAME, app.myId);
    el.me.textContent = app.myId;
    setConn('connected');
    // Signaling queued while the socket was down belongs to negotiations that are decided
    // afresh below; the daemon held what the others sent us and delivers it now.
    sig.clearOutbox();
    app.presence = new Set(others);
    ensureTile(app.myId, true);
    renderLocalTile();
    setState('in-room');
    sendMediaState('*');
    if (screen && share.from === app.myId) {
      send({ type: 'room-share-start', to: '*', seq: share.seq, stream: screenContainer.id });
    }
    for (const id of others) {
      const p = peers.get(id);
      if (p && p.connected && p.pc.signalingState === 'stable') {
        // Media kept flowing while we were away: keep it if the other side still has it.
        send({ type: 'room-check', to: id, pc: p.pcid, remote: p.remotePc });
      } else {
        // The newcomer offers to everyone already here (and half-made connections start over).
        if (p) closePeer(p);
        createPeer(id, true);
      }
    }
    // Connections to people no longer listed: they may be reconnecting too; sweep them later.
    clearTimeout(sweepTimer);
    sweepTimer = setTimeout(sweep, SWEEP_AFTER_MS);
    sweep(true);
    if (others.length && typeof RTCPeerConnection !== 'function') {
      // createPeer said so for each of them; the welcome's own line must not hide it.
      setStatus(`In ${app.room}, but this browser cannot make WebRTC calls: it cannot connect to ${others.join(', ')}.`, 'error');
    } else if (!firstWelcome) setStatus(`Back online in ${app.room}.`, 'ok');
    else if (mediaNote) setStatus(mediaNote.text, mediaNote.level);
    else if (others.length) setStatus(`Joined ${app.room}: connecting to ${others.join(', ')}…`, 'ok');
    else setStatus(`Joined ${app.room}. Nobody else is here yet: share the link to invite people.`, 'ok');
    renderAll();
  }

  // "In room X with a, b": who this page has media with now.
  function roomStatus() {
    const on = Array.from(peers.values()).filter((p) => p.connected).map((p) => p.id).sort();
    const waiting = Array.from(peers.values()).filter((p) => !p.connected).map((p) => p.id).sort();
    let text = on.length ? `In ${app.room} with ${on.join(', ')}.` : `In ${app.room}.`;
    if (waiting.length) text += ` Connecting to ${waiting.join(', ')}…`;
    if (share.from && share.from !== app.myId) text += ` ${share.from} is sharing their screen.`;
    if (share.from === app.myId) text += ' You are sharing your screen.';
    if (listenOnly) text += ' You are listening only: others cannot hear you (see the note above or rejoin after allowing the microphone).';
    setStatus(text, listenOnly ? 'warn' : 'ok');
  }

  // After our reconnect the peer asks whether our connection with it is still the one it has.
  function onCheck(msg) {
    if (!inRoom() || !validPeer(msg.from) || typeof msg.pc !== 'string') return;
    app.presence.add(msg.from);
    const p = peers.get(msg.from);
    if (p && p.pcid === msg.remote && p.remotePc === msg.pc && p.pc.signalingState === 'stable') return;
    // We dropped it (we saw the peer leave) or it is stuck: offer a new one; its pc id replaces theirs.
    if (p) closePeer(p);
    createPeer(msg.from, true);
  }

  // Peers (and tiles) of ids that are not in the room: drop them (soft: only tiles without a pc).
  function sweep(soft = false) {
    for (const id of Array.from(tiles.keys())) {
      if (id === app.myId || app.presence.has(id)) continue;
      const p = peers.get(id);
      if (p && soft) continue;
      if (p) closePeer(p);
      removeTile(id);
    }
    if (share.from && share.from !== app.myId && !app.presence.has(share.from) && !soft) setShare(null, share.seq, null);
  }

  function onPeerJoined(id) {
    if (!validPeer(id) || !inRoom()) return;
    app.presence.add(id);
    failures.delete(id);
    // The newcomer offers; we answer. Nothing to do until its offer arrives.
  }

  function onPeerLeft(id) {
    if (!validPeer(id)) return;
    app.presence.delete(id);
    failures.delete(id);
    const p = peers.get(id);
    if (p) closePeer(p);
    removeTile(id);
    if (share.from === id) {
      setShare(null, share.seq, null);
      if (inRoom()) setStatus(`${id} left; their screen share ended.`);
    } else if (inRoom() && p) {
      setStatus(`${id} left the room.`);
    }
    renderAll();
  }

  function onPeersList(ids) {
    if (!inRoom()) return;
    const list = new Set(ids.filter(validPeer));
    for (const id of Array.from(app.presence)) if (!list.has(id)) onPeerLeft(id);
    for (const id of list) app.presence.add(id);
  }

  // A message of ours was not delivered: the target of our signaling is gone, drop what we have with it.
  function onUnreachable(ref) {
    if (typeof ref.to === 'string' && ref.to !== '*' && String(ref.type || '').startsWith('room-')) onPeerLeft(ref.to);
  }

  // ---------------------------------------------------------------- media
  let mediaNote = null; // { text, level }: shown when the room is joined
  // Microphone and camera, or the microphone alone, or null: listening only.
  async function getLocalMedia() {
    listenOnly = false;
    mediaNote = null;
    if (!SignalKit.mediaAvailable()) {
      listenOnly = true;
      mediaNote = { text: `${SignalKit.insecureText()} You joined listening only.`, level: 'error' };
      return null;
    }
    try {
      return await SignalKit.getMedia('video', {
        video: VIDEO,
        audioOnlyOn: AUDIO_ONLY_ON,
        onAudioOnly: () => {
          mediaNote = { text: 'No usable camera (missing, busy or not allowed): you are in the room with audio only.', level: 'warn' };
        },
      });
    } catch (e) {
      listenOnly = true;
      mediaNote = { text: `${mediaErrorText(e)} You joined listening only: others cannot hear you.`, level: 'error' };
      return null;
    }
  }

  function mediaErrorText(e) { return SignalKit.mediaErrorText(e, 'microphone', 'leave and join again'); }

  function sendMediaState(to) {
    if (!localStream) return;
    const a = localStream.getAudioTracks()[0];
    const v = localStream.getVideoTracks()[0];
    send({ type: 'room-media', to, mic: !!(a && a.enabled), cam: !!(v && v.enabled) });
  }

  function onMediaState(msg) {
    const t = tiles.get(msg.from);
    if (!t || !validPeer(msg.from)) return;
    t.mic = msg.mic !== false;
    t.cam = msg.cam !== false;
    renderTile(msg.from);
  }

  // ---------------------------------------------------------------- peer connections
  function createPeer(id, offerer) {
    let pc;
    try {
      pc = new RTCPeerConnection({ iceServers: sig.iceServers });
    } catch (e) {
      console.warn('[room] ICE server list refused, using none', e);
      try { pc = new RTCPeerConnection({ iceServers: [] }); } catch (e2) {
        setStatus(`This browser cannot make WebRTC calls (${e2.message}).`, 'error');
        return null;
      }
    }
    const p = {
      id, pc, pcid: randomHex(8), remotePc: null, polite: app.myId > id,
      makingOffer: false, ignoreOffer: false, pending: [], chain: Promise.resolve(),
      streams: new Map(), screenTx: null, mediaAdded: false, connected: false, connectTimer: null,
      restartTimer: null,
    };
    peers.set(id, p);
    const live = () => peers.get(id) === p;
    // Trickle ICE: every candidate goes out as soon as it is found.
    pc.onicecandidate = (e) => {
      if (e.candidate && live()) send({ type: 'room-candidate', to: id, pc: p.pcid, candidate: e.candidate.toJSON() });
    };
    pc.onnegotiationneeded = () => { if (live()) negotiate(p); };
    pc.ontrack = (e) => { if (live()) onTrack(p, e); };
    pc.onconnectionstatechange = () => { if (live()) onPcState(p); };
    pc.oniceconnectionstatechange = () => { if (live()) onPcState(p); };
    ensureTile(id, false);
    // Tell the newcomer (or the member we offer to) what we are doing before any media arrives.
    sendMediaState(id);
    if (screen && share.from === app.myId) send({ type: 'room-share-start', to: id, seq: share.seq, stream: screenContainer.id });
    if (offerer) addLocalMedia(p, true); // fires negotiationneeded: the offer goes out
    p.connectTimer = setTimeout(() => onConnectTimeout(p), CONNECT_TIMEOUT_MS);
    renderTile(id);
    return p;
  }

  // Offerer: own transceivers (recv-only ones where we have no track, so the offer always has
  // audio first and the camera video second). Answerer (after the remote offer is applied):
  // addTrack reuses the offer's transceivers.
  function addLocalMedia(p, offerer) {
    if (p.mediaAdded) return;
    p.mediaAdded = true;
    const pc = p.pc;
    const a = localStream && localStream.getAudioTracks()[0];
    const v = localStream && localStream.getVideoTracks()[0];
    if (a) pc.addTrack(a, localStream); else if (offerer) pc.addTransceiver('audio', { direction: 'recvonly' });
    if (v) pc.addTrack(v, localStream); else if (offerer) pc.addTransceiver('video', { direction: 'recvonly' });
    if (screen) addScreen(p);
  }

  function addScreen(p) {
    if (!screen || !p.mediaAdded) return;
    const tx = p.screenTx;
    try {
      if (tx && tx.currentDirection !== 'stopped') {
        tx.sender.replaceTrack(screen.track).catch((e) => console.warn('[room] replaceTrack', e));
        tx.direction = 'sendonly'; // fires negotiationneeded
      } else {
        p.screenTx = p.pc.addTransceiver(screen.track, { direction: 'sendonly', streams: [screenContainer] });
      }
    } catch (e) {
      console.warn('[room] cannot add the screen track', e);
    }
  }

  function removeScreen(p) {
    const tx = p.screenTx;
    if (!tx) return;
    try {
      tx.sender.replaceTrack(null).catch(() => { /* closed */ });
      tx.direction = 'inactive'; // fires negotiationneeded
    } catch (_) { /* closed */ }
  }

  async function negotiate(p) {
    const live = () => peers.get(p.id) === p;
    try {
      p.makingOffer = true;
      await p.pc.setLocalDescription();
      if (!live()) return;
      const d = p.pc.localDescription;
      send({ type: d.type === 'offer' ? 'room-offer' : 'room-answer', to: p.id, pc: p.pcid, sdp: d.sdp });
    } catch (e) {
      if (live()) console.warn(`[room] offer to ${p.id} failed`, e);
    } finally {
      p.makingOffer = false;
    }
  }

  function onSignal(msg) {
    if (!inRoom() || !validPeer(msg.from) || typeof msg.pc !== 'string' || msg.pc.length > 64) return;
    const from = msg.from;
    let p = peers.get(from);
    if (msg.type === 'room-offer') {
      if (typeof msg.sdp !== 'string') return;
      if (p && p.remotePc && p.remotePc !== msg.pc) {
        // The other side started a new connection (rebuilt after a failure or a long absence).
        closePeer(p);
        p = null;
      }
      if (!p) {
        const others = Array.from(peers.keys()).filter((id) => id !== from).length;
        if (others >= MAX_PEOPLE - 1) return; // a 7th person: it sees the room full and leaves
        p = createPeer(from, false);
        if (!p) return;
        roomStatus();
      }
      p.remotePc = msg.pc;
      app.presence.add(from);
    } else {
      if (!p) return;
      if (p.remotePc && p.remotePc !== msg.pc) return; // for a connection that is gone
      if (msg.type === 'room-answer') {
        if (typeof msg.sdp !== 'string') return;
        p.remotePc = msg.pc;
      } else if (!p.remotePc) {
        return; // candidates always follow the offer or answer that named their connection
      }
    }
    const q = p;
    q.chain = q.chain.then(() => handleSignal(q, msg)).catch((e) => {
      if (peers.get(q.id) === q) console.warn(`[room] signaling with ${q.id} failed`, e);
    });
  }

  async function handleSignal(p, msg) {
    const live = () => peers.get(p.id) === p;
    if (!live()) return;
    const pc = p.pc;
    if (msg.type === 'room-candidate') {
      if (!msg.candidate || typeof msg.candidate !== 'object') return;
      if (!pc.remoteDescription) {
        if (p.pending.length < MAX_PENDING_CANDIDATES) p.pending.push(msg.candidate);
        return;
      }
      try { await pc.addIceCandidate(msg.candidate); } catch (e) { if (!p.ignoreOffer) console.warn('[room] bad candidate', e); }
      return;
    }
    const type = msg.type === 'room-offer' ? 'offer' : 'answer';
    const collision = type === 'offer' && (p.makingOffer || pc.signalingState !== 'stable');
    p.ignoreOffer = !p.polite && collision;
    if (p.ignoreOffer) return; // ours wins; they roll back and answer it
    if (type === 'answer' && pc.signalingState !== 'have-local-offer') return; // late duplicate
    await pc.setRemoteDescription({ type, sdp: msg.sdp }); // a polite collision rolls back implicitly
    if (!live()) return;
    const queued = p.pending;
    p.pending = [];
    for (const c of queued) pc.addIceCandidate(c).catch((e) => console.warn('[room] bad candidate', e));
    if (type === 'offer') {
      addLocalMedia(p, false);
      await pc.setLocalDescription();
      if (!live()) return;
      send({ type: 'room-answer', to: p.id, pc: p.pcid, sdp: pc.localDescription.sdp });
    }
  }

  function onTrack(p, e) {
    let stream = e.streams && e.streams[0];
    if (!stream) {
      // No msid: keep the track in a stream of its own.
      stream = p.streams.get(`track:${e.track.id}`) || new MediaStream();
      if (!stream.getTrackById(e.track.id)) stream.addTrack(e.track);
      p.streams.set(`track:${e.track.id}`, stream);
    } else {
      p.streams.set(stream.id, stream);
      stream.onremovetrack = () => { renderTile(p.id); renderStage(); };
      stream.onaddtrack = () => { renderTile(p.id); renderStage(); };
    }
    e.track.onunmute = () => { renderTile(p.id); renderStage(); };
    renderTile(p.id);
    renderStage();
  }

  function onPcState(p) {
    const pc = p.pc;
    const s = pc.connectionState || pc.iceConnectionState;
    if (s === 'disconnected' && !p.restartTimer && app.myId < p.id) {
      // A network blip: ask for new ICE candidates instead of waiting ~30 s for "failed".
      p.restartTimer = setTimeout(() => {
        p.restartTimer = null;
        const now = p.pc.connectionState || p.pc.iceConnectionState;
        if (peers.get(p.id) === p && now === 'disconnected' && typeof p.pc.restartIce === 'function') p.pc.restartIce();
      }, ICE_RESTART_AFTER_MS);
    }
    if (s === 'connected' || s === 'completed') {
      if (!p.connected) {
        p.connected = true;
        clearTimeout(p.connectTimer);
        failures.delete(p.id);
        if (inRoom()) roomStatus();
      }
    } else if (s === 'failed') {
      peerFailed(p, `the media connection to ${p.id} failed`);
      return;
    }
    renderTile(p.id);
  }

  function onConnectTimeout(p) {
    if (peers.get(p.id) !== p || p.connected) return;
    if (!p.remotePc) {
      // Never answered: not on the room page (the intercom page can join the same room).
      closePeer(p);
      removeTile(p.id);
      if (inRoom()) setStatus(`${p.id} is in this room but did not answer (not on the room page?).`, 'warn');
      renderAll();
      return;
    }
    peerFailed(p, `no media connection to ${p.id} within ${CONNECT_TIMEOUT_MS / 1000} s`);
  }

  // One connection failed: only it is torn down. The smaller id rebuilds it; the other waits
  // for that offer (which replaces whatever it still has).
  function peerFailed(p, why) {
    const id = p.id;
    closePeer(p);
    if (!inRoom() || !app.presence.has(id)) { removeTile(id); return; }
    const n = (failures.get(id) || 0) + 1;
    failures.set(id, n);
    const t = tiles.get(id);
    if (n > MAX_PC_RETRIES) {
      if (t) t.el.dataset.state = 'failed';
      setStatus(`Cannot connect to ${id}: ${why}. Leave and join again to retry.`, 'error');
      renderTile(id);
      return;
    }
    setStatus(`Reconnecting to ${id}: ${why}…`, 'warn');
    renderTile(id);
    if (app.myId < id) {
      const seq = joinSeq;
      setTimeout(() => {
        if (seq === joinSeq && inRoom() && app.presence.has(id) && !peers.has(id)) createPeer(id, true);
      }, 250 * 2 ** n);
    }
  }

  function closePeer(p) {
    if (peers.get(p.id) === p) peers.delete(p.id);
    clearTimeout(p.connectTimer);
    clearTimeout(p.restartTimer);
    const pc = p.pc;
    pc.onicecandidate = pc.onnegotiationneeded = pc.ontrack = pc.onconnectionstatechange = pc.oniceconnectionstatechange = null;
    try { pc.close(); } catch (_) { /* ignore */ }
    for (const s of p.streams.values()) { s.onremovetrack = s.onaddtrack = null; }
    const t = tiles.get(p.id);
    if (t) { t.video.srcObject = null; t.audio.srcObject = null; }
  }

  // ---------------------------------------------------------------- screen sharing
  function beats(seqA, idA, seqB, idB) { return seqA > seqB || (seqA === seqB && idA > idB); }

  function setShare(from, seq, stream) {
    share.from = from;
    share.seq = seq;
    share.stream = stream;
    renderStage();
    renderControls();
    for (const id of tiles.keys()) renderTile(id);
  }

  async function startShare() {
    if (!inRoom() || screen) return;
    if (!canShareScreen()) {
      setStatus('This browser cannot share its screen (most phones cannot).', 'warn');
      return;
    }
    const seq = joinSeq;
    el.shareBtn.disabled = true;
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15, max: 30 } }, audio: false });
    } catch (e) {
      renderControls();
      if (e && e.name === 'NotAllowedError') setStatus('Screen sharing was cancelled or not allowed.', 'warn');
      else setStatus(`Could not share the screen: ${e && e.name ? e.name + ': ' : ''}${e && e.message ? e.message : e}`, 'error');
      return;
    }
    const track = stream.getVideoTracks()[0];
    if (seq !== joinSeq || !inRoom() || screen || !track) { stopStream(stream); renderControls(); return; }
    try { track.contentHint = 'detail'; } catch (_) { /* old browser */ }
    screen = { stream, track };
    for (const t of screenContainer.getTracks()) screenContainer.removeTrack(t);
    screenContainer.addTrack(track);
    // The browser's own "Stop sharing" ends the track.
    track.addEventListener('ended', () => { if (screen && screen.track === track) stopShare(); });
    seqSeen += 1;
    setShare(app.myId, seqSeen, screenContainer.id);
    send({ type: 'room-share-start', to: '*', seq: seqSeen, stream: screenContainer.id });
    for (const p of peers.values()) addScreen(p);
    setStatus('You are sharing your screen.', 'ok');
  }

  // announce: false when someone else's share replaced ours (they already told everyone).
  function stopShare({ announce = true, text = 'You stopped sharing your screen.' } = {}) {
    const s = screen;
    if (!s) return;
    screen = null;
    for (const p of peers.values()) removeScreen(p);
    stopStream(s.stream);
    for (const t of screenContainer.getTracks()) screenContainer.removeTrack(t);
    if (share.from === app.myId) {
      if (announce) send({ type: 'room-share-stop', to: '*', seq: share.seq });
      setShare(null, share.seq, null);
    }
    renderControls();
    if (text && inRoom()) setStatus(text);
  }

  function onShareStart(msg) {
    const from = msg.from;
    if (!validPeer(from) || !inRoom() || typeof msg.stream !== 'string') return;
    const seq = Number.isSafeInteger(msg.seq) && msg.seq > 0 ? msg.seq : 0;
    seqSeen = Math.max(seqSeen, seq);
    if (share.from && share.from !== from && !beats(seq, from, share.seq, share.from)) return; // ours is newer
    const wasMine = share.from === app.myId;
    setShare(from, seq, msg.stream);
    if (wasMine && screen) {
      stopShare({ announce: false, text: null });
      setStatus(`${from} started sharing their screen, so your share stopped.`, 'info');
    } else {
      setStatus(`${from} is sharing their screen.`);
    }
  }

  function onShareStop(msg) {
    if (!validPeer(msg.from) || share.from !== msg.from) return;
    if (Number.isSafeInteger(msg.seq) && msg.seq < share.seq) return; // an older share's stop
    setShare(null, share.seq, null);
    if (inRoom()) setStatus(`${msg.from} stopped sharing their screen.`);
  }

  // ---------------------------------------------------------------- rendering
  function ensureTile(id, mine) {
    let t = tiles.get(id);
    if (t) return t;
    const div = document.createElement('div');
    div.className = mine ? 'tile me' : 'tile';
    div.dataset.testid = `tile-${id}`;
    div.dataset.peer = id;
    div.dataset.state = mine ? 'connected' : 'new';
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true; // sound goes through the <audio> element
    video.setAttribute('playsinline', '');
    video.setAttribute('autoplay', '');
    video.setAttribute('muted', '');
    video.dataset.testid = `video-${id}`;
    const avatar = document.createElement('span');
    avatar.className = 'tile-avatar';
    avatar.textContent = id.slice(0, 1).toUpperCase();
    avatar.setAttribute('aria-hidden', 'true');
    const audio = document.createElement('audio');
    audio.autoplay = true;
    audio.setAttribute('playsinline', '');
    audio.dataset.testid = `audio-${id}`;
    const label = document.createElement('span');
    label.className = 'tile-label';
    const name = document.createElement('span');
    name.className = 'tile-name';
    name.textContent = mine ? `${id} (you)` : id;
    const badge = document.createElement('span');
    badge.className = 'tile-badge';
    badge.dataset.testid = `badge-${id}`;
    label.append(name, badge);
    div.append(video, avatar, label);
    if (!mine) div.append(audio);
    t = { el: div, video, audio, avatar, name, badge, mic: true, cam: true, mine };
    tiles.set(id, t);
    if (mine) el.tiles.prepend(div); else el.tiles.append(div);
    el.tiles.dataset.count = String(tiles.size);
    return t;
  }

  function removeTile(id) {
    const t = tiles.get(id);
    if (!t) return;
    t.video.srcObject = null;
    t.audio.srcObject = null;
    t.el.remove();
    tiles.delete(id);
    el.tiles.dataset.count = String(tiles.size);
  }

  function setSrc(media, stream) {
    if (media.srcObject === stream) return;
    media.srcObject = stream;
    if (!stream) return;
    const pr = media.play();
    if (pr && pr.catch) {
      pr.catch((e) => {
        // Autoplay blocked (no user gesture yet): ask for a tap.
        if (media.tagName === 'AUDIO' && e && e.name === 'NotAllowedError') el.unblockAudioBtn.hidden = false;
      });
    }
  }

  function renderLocalTile() {
    const t = tiles.get(app.myId);
    if (!t) return;
    const v = localStream && localStream.getVideoTracks()[0];
    const a = localStream && localStream.getAudioTracks()[0];
    t.cam = !!(v && v.enabled);
    t.mic = !!(a && a.enabled);
    setSrc(t.video, v ? localStream : null);
    t.el.dataset.video = t.cam ? 'on' : 'off';
    t.el.dataset.mic = t.mic ? 'on' : 'off';
    t.badge.textContent = listenOnly ? 'listening only' : (t.mic ? '' : 'muted');
  }

  function renderTile(id) {
    if (id === app.myId) { renderLocalTile(); return; }
    const t = tiles.get(id);
    if (!t) return;
    const p = peers.get(id);
    let cam = null;
    if (p) {
      for (const s of p.streams.values()) {
        if (share.from === id && s.id === share.stream) continue; // the screen goes on the stage
        if (s.getTracks().length) { cam = s; break; }
      }
    }
    const hasVideo = !!(cam && cam.getVideoTracks().some((tr) => !tr.muted)) && t.cam;
    setSrc(t.video, cam);
    setSrc(t.audio, cam);
    t.el.dataset.video = hasVideo ? 'on' : 'off';
    t.el.dataset.mic = t.mic ? 'on' : 'off';
    let state;
    if (!p) state = failures.get(id) > MAX_PC_RETRIES ? 'failed' : 'reconnecting';
    else {
      const s = p.pc.connectionState || p.pc.iceConnectionState;
      state = s === 'completed' ? 'connected' : s;
    }
    t.el.dataset.state = state;
    const words = { new: 'connecting…', connecting: 'connecting…', checking: 'connecting…', disconnected: 'reconnecting…',
      reconnecting: 'reconnecting…', failed: 'no connection', closed: 'left' };
    t.badge.textContent = words[state] || (t.mic ? '' : 'muted');
    t.el.classList.toggle('presenting', share.from === id);
  }

  function renderStage() {
    let stream = null;
    let label = '';
    if (share.from && share.from === app.myId && screen) {
      stream = screen.stream;
      label = 'You are sharing your screen';
    } else if (share.from) {
      const p = peers.get(share.from);
      const s = p && p.streams.get(share.stream);
      if (s && s.getVideoTracks().length) stream = s;
      label = stream ? `${share.from} is sharing their screen` : `${share.from} is sharing their screen (connecting…)`;
    }
    el.stage.hidden = !share.from;
    el.stage.dataset.sharer = share.from || '';
    el.stageLabel.textContent = label;
    setSrc(el.stageVideo, stream);
    document.body.dataset.sharing = share.from ? (share.from === app.myId ? 'me' : 'other') : 'none';
  }

  function renderControls() {
    const live = app.state !== 'start';
    const a = localStream && localStream.getAudioTracks()[0];
    const v = localStream && localStream.getVideoTracks()[0];
    el.muteBtn.disabled = !live || !a;
    const muted = !!a && !a.enabled;
    el.muteBtn.setAttribute('aria-pressed', String(muted));
    el.muteBtn.textContent = muted ? 'Unmute' : 'Mute';
    el.cameraBtn.disabled = !live || !v;
    const camOff = !!v && !v.enabled;
    el.cameraBtn.setAttribute('aria-pressed', String(camOff));
    el.cameraBtn.textContent = camOff ? 'Camera on' : 'Camera off';
    el.cameraBtn.hidden = live && !v;
    const sharing = !!screen;
    el.shareBtn.disabled = !inRoom() || !canShareScreen();
    el.shareBtn.hidden = !canShareScreen();
    el.shareBtn.setAttribute('aria-pressed', String(sharing));
    el.shareBtn.textContent = sharing ? 'Stop sharing' : 'Share screen';
    document.body.dataset.muted = String(muted);
  }

  function renderAll() {
    for (const id of tiles.keys()) renderTile(id);
    renderStage();
    renderControls();
    el.tiles.dataset.count = String(tiles.size);
    const others = tiles.size - (tiles.has(app.myId) ? 1 : 0);
    document.title = app.state === 'start' ? baseTitle :
      `${app.room} (${others + 1}) – ${baseTitle}`;
  }

  el.unblockAudioBtn.addEventListener('click', () => {
    el.unblockAudioBtn.hidden = true;
    for (const t of tiles.values()) {
      if (t.mine || !t.audio.srcObject) continue;
      const pr = t.audio.play();
      if (pr && pr.catch) pr.catch(() => { el.unblockAudioBtn.hidden = false; });
    }
  });

  // ---------------------------------------------------------------- join / leave
  // Other tabs of this browser (the intercom page too) ask before taking a name.
  const nameUsedByAnotherTab = SignalKit.tabNames((name) => name === app.name && app.state !== 'start');

  async function roomPeopleCount(room) {
    // Best effort: a server that cannot tell (older daemon, unreachable) lets the welcome decide.
    const ctl = typeof AbortController === 'function' ? new AbortController() : null;
    const timer = setTimeout(() => ctl && ctl.abort(), 3000);
    try {
      const r = await fetch(`/api/rooms/${encodeURIComponent(room)}`, { cache: 'no-store', signal: ctl ? ctl.signal : undefined });
      if (!r.ok) return -1;
      const j = await r.json();
      return Array.isArray(j.peers) ? j.peers.filter((id) => id !== app.name).length : -1;
    } catch (_) {
      return -1;
    } finally {
      clearTimeout(timer);
    }
  }

  async function join(room, name) {
    if (app.state !== 'start') return;
    const seq = ++joinSeq;
    showFormError('');
    app.room = room;
    app.name = name;
    app.joined = false;
    app.myId = null;
    putRoomInAddress(room);
    store(LS_NAME, name);
    el.roomName.textContent = room;
    el.me.textContent = name;
    setState('joining');
    setStatus(`Joining room ${room}…`);
    const [count, usedHere] = await Promise.all([roomPeopleCount(room), nameUsedByAnotherTab(name)]);
    if (seq !== joinSeq) return;
    if (usedHere) {
      leave(`“${name}” is in use in another tab of this browser. Pick another name for this tab.`, 'warn');
      showFormError('This name is in use in another tab of this browser.');
      return;
    }
    if (count >= MAX_PEOPLE) {
      leave(`This room is full (${MAX_PEOPLE} people max).`, 'error');
      return;
    }
    setStatus(SignalKit.mediaAvailable() ? 'Starting the microphone and camera…' : SignalKit.insecureText());
    const stream = await getLocalMedia();
    if (seq !== joinSeq) { stopStream(stream); return; }
    localStream = stream;
    if (localStream) {
      for (const t of localStream.getTracks()) {
        t.addEventListener('ended', () => { if (localStream && localStream.getTracks().includes(t)) renderAll(); });
      }
    }
    ensureTile(name, true);
    app.myId = name; // until the welcome confirms it
    renderLocalTile();
    renderControls();
    sig.start();
  }

  // Close everything and return to the start form.
  function leave(text = 'You left the room.', level = 'info') {
    joinSeq++;
    if (screen) stopShare({ text: null }); // tells the others while the socket is still open
    for (const p of Array.from(peers.values())) closePeer(p);
    for (const id of Array.from(tiles.keys())) removeTile(id);
    stopStream(localStream);
    localStream = null;
    listenOnly = false;
    clearTimeout(sweepTimer);
    sig.close();
    app.presence.clear();
    failures.clear();
    app.joined = false;
    app.myId = null;
    mediaNote = null;
    share.from = null; share.seq = 0; share.stream = null;
    seqSeen = 0;
    el.unblockAudioBtn.hidden = true;
    setConn('disconnected');
    setState('start');
    renderAll();
    setStatus(text, level);
  }

  function toggleMute() {
    const a = localStream && localStream.getAudioTracks()[0];
    if (!a) return;
    a.enabled = !a.enabled;
    renderControls();
    renderLocalTile();
    sendMediaState('*');
  }

  function toggleCamera() {
    const v = localStream && localStream.getVideoTracks()[0];
    if (!v) return;
    v.enabled = !v.enabled; // the others get black frames and an avatar
    renderControls();
    renderLocalTile();
    sendMediaState('*');
  }

  // ---------------------------------------------------------------- buttons
  el.joinForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const room = el.roomInput.value.trim();
    const name = el.nameInput.value.trim();
    if (!ID_RE.test(room)) {
      showFormError('Room: use 1–64 characters: letters A–Z a–z, digits 0–9 and . _ ~ - (or press New room).');
      el.roomInput.focus();
      return;
    }
    if (!ID_RE.test(name)) {
      showFormError('Name: use 1–64 characters: letters A–Z a–z, digits 0–9 and . _ ~ -');
      el.nameInput.focus();
      return;
    }
    join(room, name);
  });

  el.newRoomBtn.addEventListener('click', async () => {
    el.newRoomBtn.disabled = true;
    showFormError('');
    try {
      const r = await fetch('/api/rooms', { method: 'POST', cache: 'no-store' });
      if (r.status === 404 || r.status === 405) {
        showFormError('This intercom server cannot make new rooms: type a room name instead.');
        return;
      }
      const j = await r.json().catch(() => null);
      if (!r.ok || !j || typeof j.room !== 'string' || !ID_RE.test(j.room)) {
        showFormError(`The server could not make a new room (HTTP ${r.status}).`);
        return;
      }
      el.roomInput.value = j.room;
      putRoomInAddress(j.room);
      setStatus('New room made: its link is in the address bar. Pick your name and join.', 'ok');
      if (ID_RE.test(el.nameInput.value.trim())) join(j.room, el.nameInput.value.trim());
      else el.nameInput.focus();
    } catch (e) {
      showFormError(`Cannot reach the intercom server (${e.message}).`);
    } finally {
      el.newRoomBtn.disabled = false;
    }
  });

  el.leaveBtn.addEventListener('click', () => leave());
  el.muteBtn.addEventListener('click', toggleMute);
  el.cameraBtn.addEventListener('click', toggleCamera);
  el.shareBtn.addEventListener('click', () => { if (screen) stopShare(); else startShare(); });
  el.copyLinkBtn.addEventListener('click', async () => {
    const url = el.roomLink.href;
    try {
      await navigator.clipboard.writeText(url);
      setStatus('Link copied: send it to the people you want in this room.', 'ok');
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents(el.roomLink);
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      setStatus('Copy the selected link and send it to the people you want in this room.');
    }
  });
  el.roomLink.addEventListener('click', (ev) => ev.preventDefault()); // it is this page: no reload

  // Leaving the page: tell the others now (the share stops, the socket closes cleanly).
  window.addEventListener('pagehide', () => { if (app.state !== 'start') leave(); });

  // ---------------------------------------------------------------- test / debug handle
  window.room = {
    get id() { return app.myId; },
    get name() { return app.name; },
    get room() { return app.room; },
    get state() { return app.state; },
    get conn() { return app.conn; },
    /** id -> RTCPeerConnection, for every peer this page has a connection with. */
    get peers() { return new Map(Array.from(peers, ([id, p]) => [id, p.pc])); },
    get presence() { return Array.from(app.presence); },
    /** id of the person sharing their screen (this page's own id when it shares), or null. */
    get sharing() { return share.from; },
    get shareStreamId() { return share.stream; },
    get localStream() { return localStream; },
    get localScreenTrack() { return screen ? screen.track : null; },
    get listenOnly() { return listenOnly; },
    remoteStreams(id) { const p = peers.get(id); return p ? Array.from(p.streams.values()) : []; },
    join: (room, name) => join(room, name),
    leave: () => leave(),
    startShare, stopShare: () => stopShare(),
    toggleMute, toggleCamera,
    /** Debug: close the signaling socket as a network drop would (media keeps flowing; the page reconnects). */
    dropSignaling() { sig.interrupt(); },
  };

  // ---------------------------------------------------------------- start
  setConn('disconnected');
  setState('start');
  renderAll();
  const r0 = roomFromAddress();
  if (r0) {
    el.roomInput.value = r0;
    el.roomLink.href = roomUrl(r0);
    el.roomLink.textContent = roomUrl(r0);
  }
  const saved = load(LS_NAME);
  if (saved && ID_RE.test(saved)) el.nameInput.value = saved;
  if (r0) {
    setStatus(`Room ${r0}: pick your name and join.`);
    (saved ? el.joinBtn : el.nameInput).focus();
  } else {
    setStatus('Type a room name, or press New room for a fresh one; then pick your name and join.');
  }
})();
