// The one-to-one call shared by the intercom page (app.js) and the door station (door.js):
// the call record, its RTCPeerConnection with trickle ICE, offer and answer, candidates that
// arrive before the remote description, the chat data channel, the connect timer and the
// teardown; and the ring tones. Wire messages (SPEC.md, through the signaling socket):
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

  return { engine, audioContext, startTone, stopTone };
})();
