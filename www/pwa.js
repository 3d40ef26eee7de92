// The installable app (manifest.webmanifest, sw.js), for the intercom, room and door pages:
//   - registers the service worker, on a secure context only (browsers allow workers nowhere else);
//   - says plainly, on the page, when the intercom cannot be reached, and clears that once it
//     answers again. The signaling client of signal.js already reconnects with backoff and
//     shows it in body[data-conn]; this only watches that, plus a probe of /healthz for a page
//     that is not online yet (the name form of an app opened while the Pi is off);
//   - on the intercom page, shows a system notification for a ring that arrives while the page
//     is hidden (permission asked only from the "Notify me of rings" button) and closes it when
//     the ring ends. app.js is not involved: this watches body[data-state].
// A classic script, loaded last; it defines no global.
'use strict';

(() => {
  const TAG = '[pwa]';
  const PROBE_MIN_MS = 2000;
  const PROBE_MAX_MS = 30000;
  const body = document.body;
  const workers = window.isSecureContext && 'serviceWorker' in navigator;
  // Also on every load: the browser then checks sw.js for a new version. With the daemon down
  // that check fails and register() rejects, while the worker installed before keeps running.
  if (workers) {
    navigator.serviceWorker.register('sw.js').catch((e) => console.warn(TAG, `service worker not updated: ${e && e.message}`));
  }

  // ---------------------------------------------------------------- offline state
  const banner = document.createElement('div');
  banner.className = 'offline-banner';
  banner.dataset.testid = 'offline';
  banner.setAttribute('role', 'alert');
  banner.textContent = `Can't reach the intercom (${location.host}). Retrying…`;
  banner.hidden = true;
  (document.querySelector('main') || body).prepend(banner);

  let probeTimer = null;
  let probeDelay = PROBE_MIN_MS;
  function setReachable(yes) {
    banner.hidden = yes;
    body.dataset.reachable = yes ? 'yes' : 'no';
    if (yes) { clearTimeout(probeTimer); probeTimer = null; probeDelay = PROBE_MIN_MS; }
  }
  // One GET of /healthz (never seen by the service worker): any answer means the daemon is there.
  async function probe() {
    clearTimeout(probeTimer);
    probeTimer = null;
    try {
      await fetch('healthz', { cache: 'no-store' });
      setReachable(true);
    } catch (_) {
      setReachable(false);
      // While the signaling socket retries by itself, its success clears the banner; the probe
      // keeps going too, for a page that has no socket to retry (not online yet).
      probeTimer = setTimeout(probe, probeDelay);
      probeDelay = Math.min(PROBE_MAX_MS, probeDelay * 2);
    }
  }
  function onConn() {
    const c = body.dataset.conn;
    if (c === 'connected') setReachable(true);
    else if (c === 'reconnecting' && !probeTimer) probe();
  }
  new MutationObserver(onConn).observe(body, { attributes: true, attributeFilter: ['data-conn'] });
  window.addEventListener('online', () => { if (probeTimer) probe(); });
  if (body.dataset.conn !== 'connected') probe();

  // ---------------------------------------------------------------- ring notifications
  const incoming = document.getElementById('incoming');
  if (!incoming || !workers || typeof Notification !== 'function') return;

  const offer = document.createElement('p');
  offer.className = 'notify-offer';
  const ask = document.createElement('button');
  ask.type = 'button';
  ask.className = 'small';
  ask.dataset.testid = 'notify-rings';
  ask.textContent = 'Notify me of rings';
  offer.append(ask);
  banner.after(offer);
  const showOffer = () => { offer.hidden = Notification.permission !== 'default'; };
  showOffer();
  // Only from this tap: a permission prompt on load is refused by browsers and by people.
  ask.addEventListener('click', () => { Notification.requestPermission().then(showOffer, showOffer); });

  let ringTag = null; // the tag of the ring notification shown, or null
  function ringing() {
    const call = window.intercom && window.intercom.currentCall;
    const from = document.getElementById('incoming-from').textContent;
    return { tag: `ring-${call && call.id ? call.id : from}`, from, media: call && call.media === 'video' ? 'Video' : 'Audio' };
  }
  async function notify() {
    if (Notification.permission !== 'granted' || document.visibilityState !== 'hidden') return;
    // ready: the active registration, even when this load's register() failed (daemon down).
    const reg = await navigator.serviceWorker.ready;
    if (body.dataset.state !== 'ringing') return;
    const { tag, from, media } = ringing();
    if (tag === ringTag) return;
    ringTag = tag;
    try {
      await reg.showNotification(`${from} is calling`, {
        tag,
        body: `${media} call on the intercom. Tap to answer.`,
        icon: 'icon-192.png',
        requireInteraction: true,
        data: { url: location.href },
      });
      body.dataset.ringNotified = tag; // for tests and debugging: which ring has a notification
    } catch (e) {
      console.warn(TAG, `cannot show the ring notification: ${e && e.message}`);
    }
    if (body.dataset.state !== 'ringing') closeRing(); // ended while it was being shown
  }
  async function closeRing() {
    const tag = ringTag;
    ringTag = null;
    delete body.dataset.ringNotified;
    if (!tag) return;
    const reg = await navigator.serviceWorker.ready;
    for (const n of await reg.getNotifications({ tag })) n.close();
  }
  let lastState = body.dataset.state;
  new MutationObserver(() => {
    const state = body.dataset.state;
    if (state === lastState) return;
    lastState = state;
    if (state === 'ringing') notify();
    else closeRing(); // answered, rejected, missed or hung up by the caller
  }).observe(body, { attributes: true, attributeFilter: ['data-state'] });
  // Switched away while it rings: the notification is what remains of the ringing screen.
  document.addEventListener('visibilitychange', () => { if (body.dataset.state === 'ringing') notify(); });
  // The worker got a tap on the notification and brought this page to the front.
  navigator.serviceWorker.addEventListener('message', (ev) => {
    if (ev.data && ev.data.type === 'show-ring') incoming.scrollIntoView({ block: 'center' });
  });
})();
