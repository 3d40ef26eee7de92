// The one-to-one call shared by the intercom page (app.js) and the door station (door.js):
// the call record, its RTCPeerConnection with trickle ICE, offer and answer, candidates that
// arrive before the remote description, the chat data channel, the connect timer and the
// teardown; the ring tones; and the list of recent rings from the daemon's call log (GET
// /api/events). Wire messages (SPEC.md, through the signaling socket):
//   call-request {call, media[, ring:"room"]} → call-accept | call-reject {reason}
//   → offer / answer {sdp} / candidate {candidate} (trickle) → hangup {reason}
// A classic script after signal.js: it defines the one global CallKit.
'use strict';

const CallKit = (() => {
  const CONNECT_TIMEOUT_MS = 30000;   // accepted, but no media connection within this
  const MAX_PENDING_CANDIDATES = 256;
  const DROP_GRACE_MS = 1500;         // data channel closed by the other side: wait this long for its hangup

  // ---------------------------------------------------------------- the call engine
  // The page owns the current call and its UI; current() returns it (or null). Every event or
  // asynchronous step here checks that its call is still the current one, so that a call that
  // ended meanwhile is left alone. opts:
  //   tag, send(msg), current(), iceServers()
  //   onCallRequest(msg), onCallAccept(msg), onCallReject(msg), onHangup(msg)
  //                  the page's part of the directed messages (onMessage does offer, answer, candidate)
  //   media          {remoteAudio, remoteVideo, localVideo, placeholder}: the elements a call fills
  //   playAudio()    the remote <audio> got its stream: start it (autoplay handling is the page's)
  //   fail(c, why)   the call failed; why is lower case without a final period
  //   ice(c, state, first)  ICE state for the UI; first: connected for the first time
  //   chatOpen(c, open)     optional: the data channel opened or closed
  //   chat(c, text)         a chat line from the other side
  //   dropped(c)            the other side closed the data channel of a connected call
  function engine(opts) {
    const { tag, send } = opts;
    const live = (c) => opts.current() === c;

    // A directed message from the signaling socket.
    function onMessage(msg) {
      const c = opts.current();
      switch (msg.type) {
        case 'call-request': opts.onCallRequest(msg); break;
        case 'call-accept': opts.onCallAccept(msg); break;
        case 'call-reject': opts.onCallReject(msg); break;
        case 'offer': onOffer(c, msg); break;
        case 'answer': onAnswer(c, msg); break;
        case 'candidate': onCandidate(c, msg); break;
        case 'hangup': opts.onHangup(msg); break;
        default: break; // not ours
      }
    }

    function newCall(fields) {
      return {
        id: null, role: 'caller', peer: null, media: 'audio', pc: null, dc: null, localStream: null,
        remoteStream: null, pending: [], timer: null, signaled: false, connected: false, ...fields,
      };
    }

    // A directed message of call c's peer, for this call (messages without a call id match any).
    function matches(c, msg) {
      return !!c && !!c.peer && msg.from === c.peer && (!msg.call || !c.id || msg.call === c.id);
    }

    // The peer connection with the local tracks; the caller also makes the chat channel.
    // false (after fail) when this browser cannot make one.
    function open(c, caller) {
      let pc;
      try {
        pc = new RTCPeerConnection({ iceServers: opts.iceServers() });
      } catch (e) {
        console.warn(tag, 'ICE server list refused, using none', e);
        try { pc = new RTCPeerConnection({ iceServers: [] }); } catch (e2) {
          opts.fail(c, `this browser cannot make WebRTC calls (${e2.message})`);
          return false;
        }
      }
      c.pc = pc;
      for (const t of c.localStream.getTracks()) pc.addTrack(t, c.localStream);
      // Trickle ICE: every candidate goes out as soon as it is found.
      pc.onicecandidate = (e) => {
        if (e.candidate && live(c)) send({ type: 'candidate', to: c.peer, call: c.id, candidate: e.candidate.toJSON() });
      };
      pc.ontrack = (e) => { if (live(c)) addRemoteTrack(c, e.track); };
      pc.ondatachannel = (e) => { if (live(c)) setupDataChannel(c, e.channel); };
      pc.oniceconnectionstatechange = () => { if (live(c)) onIceState(c); };
      pc.onconnectionstatechange = () => {
        if (live(c) && pc.connectionState === 'failed') opts.fail(c, `no media connection to ${c.peer} could be established`);
      };
      if (caller) setupDataChannel(c, pc.createDataChannel('chat'));
      return true;
    }

    function startConnectTimer(c) {
      clearTimeout(c.timer);
      c.timer = setTimeout(() => {
        if (live(c) && !c.connected) opts.fail(c, `no media connection to ${c.peer} within ${CONNECT_TIMEOUT_MS / 1000} s`);
      }, CONNECT_TIMEOUT_MS);
    }

    // Caller, after call-accept.
    async function sendOffer(c) {
      try {
        const offer = await c.pc.createOffer();
        if (!live(c)) return;
        await c.pc.setLocalDescription(offer);
        if (!live(c)) return;
        send({ type: 'offer', to: c.peer, call: c.id, sdp: c.pc.localDescription.sdp });
      } catch (e) {
        if (live(c)) opts.fail(c, `could not create an offer (${e.message})`);
      }
    }

    function sdpOf(msg) { return typeof msg.sdp === 'string' ? msg.sdp : (msg.sdp && msg.sdp.sdp); }

    async function onOffer(c, msg) {
      if (!matches(c, msg) || c.role !== 'callee' || !c.pc) return;
      const sdp = sdpOf(msg);
      if (typeof sdp !== 'string') return;
      try {
        await c.pc.setRemoteDescription({ type: 'offer', sdp });
        if (!live(c)) return;
        flushCandidates(c);
        const answer = await c.pc.createAnswer();
        if (!live(c)) return;
        await c.pc.setLocalDescription(answer);
        if (!live(c)) return;
        send({ type: 'answer', to: c.peer, call: c.id, sdp: c.pc.localDescription.sdp });
      } catch (e) {
        if (live(c)) opts.fail(c, `could not answer the offer (${e.message})`);
      }
    }

    async function onAnswer(c, msg) {
      if (!matches(c, msg) || c.role !== 'caller' || !c.pc) return;
      const sdp = sdpOf(msg);
      if (typeof sdp !== 'string' || c.pc.signalingState !== 'have-local-offer') return;
      try {
        await c.pc.setRemoteDescription({ type: 'answer', sdp });
        if (live(c)) flushCandidates(c);
      } catch (e) {
        if (live(c)) opts.fail(c, `the answer was not accepted (${e.message})`);
      }
    }

    // Candidates can overtake the offer or answer: keep them until the remote description is set.
    function onCandidate(c, msg) {
      if (!matches(c, msg) || !msg.candidate || typeof msg.candidate !== 'object') return;
      if (!c.pc || !c.pc.remoteDescription) {
        if (c.pending.length < MAX_PENDING_CANDIDATES) c.pending.push(msg.candidate);
        return;
      }
      c.pc.addIceCandidate(msg.candidate).catch((e) => console.warn(tag, 'bad candidate', e));
    }

    function flushCandidates(c) {
      const list = c.pending;
      c.pending = [];
      for (const cand of list) c.pc.addIceCandidate(cand).catch((e) => console.warn(tag, 'bad candidate', e));
    }

    function onIceState(c) {
      const s = c.pc.iceConnectionState;
      document.body.dataset.ice = s;
      if (s === 'connected' || s === 'completed') {
        clearTimeout(c.timer);
        const first = !c.connected;
        c.connected = true;
        opts.ice(c, s, first);
      } else if (s === 'failed') {
        opts.fail(c, `the media connection to ${c.peer} failed (ICE failed)`);
      } else {
        opts.ice(c, s, false);
      }
    }

    function addRemoteTrack(c, track) {
      const m = opts.media;
      if (!c.remoteStream) c.remoteStream = new MediaStream();
      if (!c.remoteStream.getTrackById(track.id)) c.remoteStream.addTrack(track);
      // Audio goes out through the <audio> element only; the <video> element stays muted.
      if (track.kind === 'audio') {
        m.remoteAudio.srcObject = c.remoteStream;
        opts.playAudio();
      } else if (track.kind === 'video') {
        m.remoteVideo.srcObject = c.remoteStream;
        m.remoteVideo.hidden = false;
        m.placeholder.hidden = true;
        m.remoteVideo.play().catch(() => { /* muted video autoplays; ignore */ });
      }
    }

    function setupDataChannel(c, dc) {
      c.dc = dc;
      dc.onopen = () => { if (live(c) && opts.chatOpen) opts.chatOpen(c, true); };
      dc.onclose = () => {
        if (!live(c)) return;
        if (opts.chatOpen) opts.chatOpen(c, false);
        // The other side closed its connection. Its hangup message, which says why, travels through
        // the server and usually lands a moment after the channel closes (the close comes straight
        // from the other browser): give it DROP_GRACE_MS, then end here anyway in case it was lost.
        if (c.connected) setTimeout(() => { if (live(c)) opts.dropped(c); }, DROP_GRACE_MS);
      };
      dc.onmessage = (e) => {
        if (!live(c)) return;
        let text = typeof e.data === 'string' ? e.data : '';
        try {
          const m = JSON.parse(text);
          if (m && typeof m.text === 'string') text = m.text;
        } catch (_) { /* plain text */ }
        opts.chat(c, text);
      };
    }

    // Ends call c, which the page has already replaced as the current call: notify tells the other side (while
    // it still rings there: hangup, to everyone for a room ring; while it rings here: call-reject),
    // then the tone stops and the connection, the microphone and camera and the media elements are released.
    function close(c, { notify = true, reason } = {}) {
      if (notify && c.signaled) {
        const extra = reason ? { reason } : {};
        if (c.role === 'callee' && !c.pc) send({ type: 'call-reject', to: c.peer, call: c.id, reason: reason || 'declined' });
        else if (c.role === 'caller' && !c.pc && c.group) send({ type: 'hangup', to: '*', call: c.id, ...extra });
        else send({ type: 'hangup', to: c.peer, call: c.id, ...extra });
      }
      clearTimeout(c.timer);
      stopTone();
      if (c.dc) { c.dc.onopen = c.dc.onclose = c.dc.onmessage = null; try { c.dc.close(); } catch (_) { /* ignore */ } }
      if (c.pc) {
        const pc = c.pc;
        pc.onicecandidate = pc.ontrack = pc.ondatachannel = pc.oniceconnectionstatechange = pc.onconnectionstatechange = null;
        try { pc.close(); } catch (_) { /* ignore */ }
      }
      SignalKit.stopStream(c.localStream);
      const m = opts.media;
      for (const v of [m.remoteAudio, m.remoteVideo, m.localVideo]) v.srcObject = null;
      m.remoteVideo.hidden = true;
      m.localVideo.hidden = true;
      m.placeholder.hidden = false;
      delete document.body.dataset.ice;
      delete document.body.dataset.media;
    }

    return { onMessage, newCall, matches, open, startConnectTimer, sendOffer, close };
  }

  // ---------------------------------------------------------------- sound (WebAudio)
  let audioCtx = null;
  let tone = null; // { gain, timer, vibrating }

  // The AudioContext, resumed: browsers start it suspended until a user gesture, so pages call
  // this on taps and key presses. null where WebAudio is missing.
  function audioContext() {
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

  // A repeating tone until stopTone: every everyMs the beeps [offset s, duration s, [Hz…]] at volume.
  function startTone({ volume, everyMs, beeps, vibrate = null }) {
    stopTone();
    const ctx = audioContext();
    if (!ctx) return;
    try {
      const gain = ctx.createGain();
      gain.gain.value = volume;
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
        for (const [offset, dur, freqs] of beeps) beep(t + offset, dur, freqs);
      };
      pattern();
      tone = { gain, timer: setInterval(pattern, everyMs), vibrating: false };
    } catch (e) {
      console.warn('tone failed', e);
    }
    if (tone && vibrate && navigator.vibrate) { try { tone.vibrating = navigator.vibrate(vibrate); } catch (_) { /* ignore */ } }
  }

  function stopTone() {
    if (!tone) return;
    const t = tone;
    tone = null;
    clearInterval(t.timer);
    try { t.gain.disconnect(); } catch (_) { /* ignore */ }
    if (t.vibrating) { try { navigator.vibrate(0); } catch (_) { /* ignore */ } }
  }

  // ---------------------------------------------------------------- recent rings (the call log)
  // The daemon's call log as a short list, newest first. GET /api/events (JSON) gives the logged
  // call events (ring, answered, rejected, missed, ended; oldest first): that is the history,
  // shown but not announced. The same URL as Server-Sent Events, opened with ?since=<seq of the
  // last of them>, then sends every new event live (presence too, ignored here); those are news,
  // said in the live region. Events of one call share `from` and `call`; a `door-opened` event
  // (the door station `from` was opened by `by` from call `call`) is added to its call's entry,
  // and makes none of its own (an open by MQTT has no call). Other kinds are skipped. After an error we
  // reconnect ourselves with ?since=, backing off, and what happened meanwhile comes first.
  // Everything shown comes from the network: it goes into the page as textContent only.
  const LOG_KINDS = new Set(['ring', 'answered', 'rejected', 'missed', 'ended', 'door-opened']);
  const LOG_MAX_CALLS = 100;            // calls remembered (the list shows `max` of them)
  const LOG_RING_STALE_MS = 75000;      // the daemon calls a ring missed after 60 s; past this: unknown
  const LOG_RETRY_MIN_MS = 2000;        // reconnecting after an error (daemon restarting, 503: full, 404)
  const LOG_RETRY_MAX_MS = 60000;
  const LOG_HIDDEN_CLOSE_MS = 60000;    // a tab hidden this long lets go of its stream (browsers
                                        // allow 6 HTTP/1.1 connections per host) and catches up when shown
  const MISSED_ICON = 'M6.5 5.5 12 11l7-7-1-1-6 6-4.5-4.5H11V3H5v6h1.5zm17.21 11.17A16.97 16.97 0 0 0 12 12C7.46 12 ' +
    '3.34 13.78.29 16.67a1 1 0 0 0 0 1.42l2.48 2.48a1 1 0 0 0 1.41.01c.79-.74 1.69-1.36 2.66-1.85a1 1 0 0 0 .56-.9v-3.1' +
    'C8.85 14.25 10.4 14 12 14s3.15.25 4.6.72v3.1c0 .39.23.74.56.9.98.49 1.87 1.12 2.67 1.85a1 1 0 0 0 1.41-.01l2.48-2.48' +
    'a1 1 0 0 0-.01-1.41z';

  const clip = (v) => (typeof v === 'string' && v ? v.slice(0, 64) : null); // ids are at most 64
  const pad = (n) => String(n).padStart(2, '0');

  // "at 14:02" today, "on Tue, 1 Dec at 14:02" (the browser's date format) on another day.
  function whenText(ms, now) {
    const d = new Date(ms);
    const t = new Date(now);
    const hhmm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    if (d.toDateString() === t.toDateString()) return `at ${hhmm}`;
    const opts = { weekday: 'short', day: 'numeric', month: 'short' };
    if (d.getFullYear() !== t.getFullYear()) opts.year = 'numeric';
    return `on ${d.toLocaleDateString(undefined, opts)} at ${hhmm}`;
  }

  function durationText(s) {
    if (!(s >= 0)) return null;
    if (s < 60) return `${Math.max(1, Math.round(s))} s`;
    if (s < 3600) return `${Math.round(s / 60)} min`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  }

  // What became of call g: {kind: ringing | answered | missed | declined | unknown, text}.
  function outcome(g, now) {
    const end = g.end;
    if (end && end.event === 'missed') return { kind: 'missed', text: 'missed' };
    if (end && end.event === 'rejected') {
      const by = clip(end.by) || 'someone';
      switch (end.reason) {
        case 'no-answer': case 'left': return { kind: 'missed', text: 'missed' }; // the rung page gave up or closed
        case 'busy': return { kind: 'declined', text: `${by} was busy` };
        case 'media-error': return { kind: 'declined', text: `${by} could not answer` };
        default: return { kind: 'declined', text: `declined by ${by}` };
      }
    }
    if (g.answered || (end && end.event === 'ended')) {
      const by = g.answered && clip(g.answered.by);
      const took = end && end.event === 'ended' ? durationText(end.duration) : null;
      return { kind: 'answered', text: `answered${by ? ` by ${by}` : ''}${took ? ` · ${took}` : ''}` };
    }
    // Still ringing, unless both the daemon's clock and ours say the daemon should have ended it
    // (it did not: it was restarted meanwhile). Either clock alone could be off.
    if (now - g.got < LOG_RING_STALE_MS || now - g.at < LOG_RING_STALE_MS) return { kind: 'ringing', text: 'ringing…' };
    return { kind: 'unknown', text: 'no answer recorded' };
  }

  // The list. opts:
  //   box      the section, hidden while it has nothing to show (no rings yet, or no call log)
  //   list     its <ol>, one <li> per call
  //   live     a polite live region (outside box, so that it exists before it speaks): entries
  //            that change while the page is open and the list can be seen are said there
  //   room()   the room whose rings to show (a call's events carry the caller's room), or null for all
  //   max      entries shown (10)
  //   onShown(shown)  optional: called after each render with whether the box shows
  function recentRings(opts) {
    const { box, list, live, room = () => null, max = 10, onShown = () => {} } = opts;
    const calls = new Map();    // from + '\n' + call → {from, call, to, room, at, got, answered, end, opened}
    let es = null;
    let lastSeq = 0;
    let retryMs = LOG_RETRY_MIN_MS;
    let retryTimer = null;
    let hiddenTimer = null;
    let renderTimer = null;
    let loaded = false;         // the history was fetched (or could not be)
    const news = new Set();     // calls changed by live events, to be announced

    function apply(ev) {
      if (!ev || typeof ev !== 'object' || !LOG_KINDS.has(ev.event)) return null;
      const from = clip(ev.from);
      const call = clip(ev.call);
      const at = Date.parse(ev.time);
      if (!from || !call || !Number.isFinite(at)) return null;
      const key = `${from}\n${call}`;
      let g = calls.get(key);
      if (ev.event === 'door-opened') {
        // Said on the ring it belongs to; a call the list does not know (its ring fell out of the log) gets no entry.
        const by = clip(ev.by);
        if (!g || !by) return null;
        if (!g.opened.includes(by)) g.opened.push(by);
        return g;
      }
      if (!g) {
        g = { key, from, call, to: null, room: null, at, got: Date.now(), ring: false, answered: null, end: null, opened: [] };
        calls.set(key, g);
        // Oldest first in the map (the log replays oldest first): drop from the front.
        for (const k of calls.keys()) { if (calls.size <= LOG_MAX_CALLS) break; calls.delete(k); }
      }
      g.to = clip(ev.to) || g.to;
      g.room = clip(ev.room) || g.room;
      switch (ev.event) {
        case 'ring':
          g.ring = true; g.at = at; g.got = Date.now();
          if (typeof ev.snapshot === 'string' && /^\/snapshots\/[0-9a-f]{32}\.jpg$/.test(ev.snapshot)) g.snapshot = ev.snapshot;
          break;
        case 'answered':
          g.answered = ev;
          // The ring itself fell out of the log: it was `after` seconds before the answer.
          if (!g.ring && typeof ev.after === 'number') g.at = Math.min(g.at, at - ev.after * 1000);
          break;
        default: // rejected, missed, ended: the last word
          if (!g.end || !(g.end.seq > ev.seq)) g.end = ev;
          if (!g.ring) g.at = Math.min(g.at, at);
      }
      return g;
    }

    function shown() {
      const r = room();
      return Array.from(calls.values())
        .filter((g) => !r || !g.room || g.room === r)
        .sort((a, b) => b.at - a.at)
        .slice(0, max);
    }

    function entry(g, now) {
      const o = outcome(g, now);
      const li = document.createElement('li');
      li.className = `ring-entry ${o.kind}`;
      li.dataset.outcome = o.kind;
      li.dataset.from = g.from;
      li.dataset.call = g.call;
      const who = document.createElement('b');
      who.className = 'ring-from';
      who.textContent = g.from;
      const when = document.createElement('time');
      when.dateTime = new Date(g.at).toISOString();
      when.title = new Date(g.at).toLocaleString();
      when.textContent = whenText(g.at, now);
      const to = g.to && g.to !== '*' ? ` ${g.to}` : '';
      const what = document.createElement('span');
      what.className = `ring-outcome ${o.kind}`;
      if (o.kind === 'missed') {
        // Not colour alone: an icon and the word.
        what.classList.add('badge');
        const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
        svg.setAttribute('class', 'icon');
        svg.setAttribute('viewBox', '0 0 24 24');
        svg.setAttribute('aria-hidden', 'true');
        const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
        path.setAttribute('fill', 'currentColor');
        path.setAttribute('d', MISSED_ICON);
        svg.append(path);
        what.append(svg);
      }
      what.append(o.text);
      if (g.snapshot) {
        // The visitor, small; a tap opens the whole picture.
        const link = document.createElement('a');
        link.className = 'ring-picture';
        link.href = g.snapshot;
        link.target = '_blank';
        link.rel = 'noopener';
        const img = document.createElement('img');
        img.src = g.snapshot;
        img.alt = `${g.from} at ${when.textContent}`;
        img.loading = 'lazy';
        link.append(img);
        li.append(link);
      }
      li.append(who, ` rang${to} `, when, ' · ', what);
      if (g.opened.length) {
        const opened = document.createElement('span');
        opened.className = 'ring-opened';
        opened.textContent = `door opened by ${g.opened.join(', ')}`;
        li.dataset.opened = g.opened.join(' ');
        li.append(' · ', opened);
      }
      return li;
    }

    function render() {
      clearTimeout(renderTimer);
      renderTimer = null;
      const now = Date.now();
      const items = shown();
      list.replaceChildren(...items.map((g) => entry(g, now)));
      box.hidden = items.length === 0;
      const said = [];
      for (const g of items) if (news.has(g.key)) said.push(list.children[items.indexOf(g)].textContent);
      news.clear();
      // Said only where the list can be seen: not over a call.
      if (said.length && box.offsetParent !== null) live.textContent = `${said.join('. ')}.`;
      // Again when a ring goes stale, and at midnight ("at 14:02" becomes a date).
      let next = new Date(now).setHours(24, 0, 1, 0);
      for (const g of items) if (outcome(g, now).kind === 'ringing') next = Math.min(next, Math.max(g.got, g.at) + LOG_RING_STALE_MS);
      renderTimer = setTimeout(render, Math.max(1000, next - now));
      onShown(!box.hidden);
    }

    // Many events arrive together (the replay): one render for all of them.
    function soon() {
      clearTimeout(renderTimer);
      renderTimer = setTimeout(render, 0);
    }

    function onData(data) {
      let ev;
      try { ev = JSON.parse(data); } catch (_) { return; }
      // A logged (call) event, of a kind shown or not: the stream goes on after it.
      if (ev && Number.isSafeInteger(ev.seq) && ev.seq > lastSeq) lastSeq = ev.seq;
      const g = apply(ev);
      if (!g) return;
      news.add(g.key);
      soon();
    }

    // The history, once: shown, not announced. Then the live stream from where it ends.
    async function load() {
      try {
        const r = await fetch('/api/events', { cache: 'no-store' });
        const body = r.ok ? await r.json() : null;
        for (const ev of (body && Array.isArray(body.events) ? body.events : [])) {
          if (ev && Number.isSafeInteger(ev.seq) && ev.seq > lastSeq) lastSeq = ev.seq;
          apply(ev);
        }
        if (calls.size) soon();
      } catch (_) { /* no call log here: the stream's own retries say the same, quietly */ }
      loaded = true;
      open();
    }

    function open() {
      clearTimeout(retryTimer);
      retryTimer = null;
      if (!loaded || es || typeof EventSource !== 'function') return;
      let s;
      try {
        // A fresh EventSource sends no Last-Event-ID: ?since= says where we were.
        s = new EventSource(lastSeq ? `/api/events?since=${lastSeq}` : '/api/events');
      } catch (e) {
        console.warn('[calllog]', 'cannot open /api/events', e);
        return;
      }
      es = s;
      s.onopen = () => {
        retryMs = LOG_RETRY_MIN_MS;
        box.dataset.stream = 'open'; // from here on, what happens is news (tests wait for this)
      };
      s.onmessage = (m) => { if (s === es) onData(m.data); };
      s.onerror = () => {
        // The stream ended (daemon restarting, network gone) or never started (503: too many
        // streams; 404: a daemon without the call log). Reconnect ourselves (see above), backing off.
        if (s !== es) return;
        es = null;
        delete box.dataset.stream;
        s.onopen = s.onmessage = s.onerror = null;
        s.close();
        retryTimer = setTimeout(open, Math.round(retryMs * (0.8 + 0.4 * Math.random())));
        retryMs = Math.min(LOG_RETRY_MAX_MS, retryMs * 2);
      };
    }

    function close() {
      clearTimeout(retryTimer);
      retryTimer = null;
      clearTimeout(hiddenTimer);
      hiddenTimer = null;
      if (!es) return;
      es.onopen = es.onmessage = es.onerror = null;
      es.close();
      es = null;
    }

    document.addEventListener('visibilitychange', () => {
      clearTimeout(hiddenTimer);
      hiddenTimer = null;
      if (document.visibilityState === 'hidden') hiddenTimer = setTimeout(close, LOG_HIDDEN_CLOSE_MS);
      else open();
    });
    // Leaving the page: let go of the stream (no error event, no retry while unloading); a page
    // restored from the back-forward cache opens it again and catches up.
    window.addEventListener('pagehide', close);
    window.addEventListener('pageshow', (e) => { if (e.persisted) open(); });

    load();
    return {
      /** Renders again (the room to show changed). */
      render,
      close,
      /** What the list shows, newest first: [{from, call, outcome, opened, text}] (tests, debugging). */
      get entries() {
        const now = Date.now();
        return shown().map((g) => ({ from: g.from, call: g.call, outcome: outcome(g, now).kind, opened: g.opened.slice(), text: entry(g, now).textContent }));
      },
      get open() { return !!es && es.readyState === EventSource.OPEN; },
    };
  }

  // ------------------------------------------------------------------ pictures of visitors
  // A still from the caller's own camera goes with its ring: taken from `stream`, at most
  // SNAPSHOT_SIDE px on the long side and SNAPSHOT_BYTES (the daemon's limits), uploaded as the
  // connected peer `id` (with this browser's token); the name the daemon gives it goes into the
  // call-request as `snapshot`. Never delays a ring by more than SNAPSHOT_WAIT_MS: without a
  // picture in time, the ring goes without one.
  const SNAPSHOT_SIDE = 640;
  const SNAPSHOT_BYTES = 100 * 1024;
  const SNAPSHOT_WAIT_MS = 1500;
  const SNAPSHOT_NAME = /^[0-9a-f]{32}\.jpg$/;

  async function still(stream) {
    const track = stream && stream.getVideoTracks()[0];
    if (!track || track.readyState !== 'live') return null;
    const video = document.createElement('video');
    video.muted = true;
    video.playsInline = true;
    video.srcObject = new MediaStream([track]);
    try {
      await video.play();
      if (!video.videoWidth) await new Promise((done) => video.addEventListener('loadeddata', done, { once: true }));
      const scale = Math.min(1, SNAPSHOT_SIDE / Math.max(video.videoWidth, video.videoHeight));
      const canvas = document.createElement('canvas');
      canvas.width = Math.max(1, Math.round(video.videoWidth * scale));
      canvas.height = Math.max(1, Math.round(video.videoHeight * scale));
      canvas.getContext('2d').drawImage(video, 0, 0, canvas.width, canvas.height);
      for (const quality of [0.8, 0.6, 0.4]) {
        const blob = await new Promise((done) => canvas.toBlob(done, 'image/jpeg', quality));
        if (blob && blob.size <= SNAPSHOT_BYTES) return blob;
      }
      return null;
    } finally {
      video.srcObject = null;
    }
  }

  async function snapshot(stream, id) {
    const attempt = (async () => {
      const blob = await still(stream);
      if (!blob || !id) return null;
      const url = `/api/snapshots?id=${encodeURIComponent(id)}&token=${encodeURIComponent(SignalKit.token())}`;
      const r = await fetch(url, { method: 'POST', body: blob, headers: { 'Content-Type': 'image/jpeg' } });
      const answer = await r.json().catch(() => ({}));
      if (!r.ok) {
        console.warn('[snapshot]', r.status, answer.error || '');
        return null;
      }
      return SNAPSHOT_NAME.test(answer.snapshot) ? answer.snapshot : null;
    })().catch((e) => { console.warn('[snapshot]', e); return null; });
    const late = new Promise((done) => setTimeout(() => done(null), SNAPSHOT_WAIT_MS));
    return Promise.race([attempt, late]);
  }

  // The URL of a picture named in a message, or null.
  function snapshotUrl(name) {
    return typeof name === 'string' && SNAPSHOT_NAME.test(name) ? `/snapshots/${name}` : null;
  }

  return { engine, audioContext, startTone, stopTone, recentRings, snapshot, snapshotUrl };
})();
