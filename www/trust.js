// trust.html: asks the daemon (GET /api/https → {port, ca, mobileconfig, caFingerprint, onboard})
// for its https port and local CA, and shows the download, the fingerprint, the steps for this
// device's system, the link to the https page and the QR code that brings a phone here; or says
// why there is nothing to install.
// body data-ca: loading → ca (a CA to install) | own-cert (--tls-cert) | no-https | error.
// Opened as trust.html?onboard[=PATH] (what the QR codes point at), it first checks whether this
// device already trusts the https page and goes there (to PATH, by default /) if it does; else it
// shows the steps and a button that checks again. body data-onboard: checking → install | going.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  function show(state, problem = '') {
    document.body.dataset.ca = state;
    $('problem').textContent = problem;
    $('problem').hidden = !problem;
  }

  // The system this browser runs on, to open its steps first.
  function thisSystem() {
    const ua = navigator.userAgent || '';
    if (/Android/i.test(ua)) return 'android';
    if (/iPhone|iPad|iPod/.test(ua) || (/Macintosh/.test(ua) && navigator.maxTouchPoints > 1)) return 'ios';
    if (/Windows/.test(ua)) return 'windows';
    if (/Macintosh/.test(ua)) return 'macos';
    if (/Linux|CrOS/.test(ua)) return 'linux';
    return null;
  }

  function openSteps() {
    const mine = document.querySelector(`#steps details[data-os="${thisSystem()}"]`);
    if (!mine) return;
    mine.open = true;
    mine.querySelector('summary').append(' (this device)');
    mine.parentElement.insertBefore(mine, mine.parentElement.querySelector('details'));
  }

  // ?onboard=PATH: where to go on the https origin once it is trusted; a path of this origin only.
  const params = new URLSearchParams(location.search);
  const onboarding = params.has('onboard');
  const next = /^\/(?!\/)/.test(params.get('onboard') || '') ? params.get('onboard') : '/';
  const PROBE_TIMEOUT_MS = 5000;

  // Whether this browser opens the https page without a certificate error: a cross-origin fetch of
  // /healthz fails outright on an untrusted certificate (no-cors hides the answer, not the error).
  async function trusts(port) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), PROBE_TIMEOUT_MS);
    try {
      await fetch(`https://${location.hostname}:${port}/healthz`, { mode: 'no-cors', cache: 'no-store', signal: ctl.signal });
      return true;
    } catch (e) {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  async function onboard(port, again) {
    $('onboarding').hidden = false;
    document.body.dataset.onboard = 'checking';
    $('onboard-continue').disabled = true;
    if (await trusts(port)) {
      document.body.dataset.onboard = 'going';
      $('onboard-text').textContent = 'This device trusts the intercom: opening it…';
      location.replace(`https://${location.hostname}:${port}${next}`);
      return;
    }
    document.body.dataset.onboard = 'install';
    $('onboard-text').textContent = again
      ? 'This device does not trust the intercom yet. Follow the steps below to the end (on an iPhone or ' +
        'iPad, the last one: the switch in Certificate Trust Settings), then tap the button again.'
      : 'Two steps: install the intercom’s certificate on this device as shown below, then come back to ' +
        'this page and tap the button.';
    $('onboard-continue').hidden = false;
    $('onboard-continue').disabled = false;
  }

  function showScan(url) {
    if (onboarding || !url || typeof onboardQr !== 'function') return;
    $('scan').append(onboardQr(url, 'Scan to set up a phone'));
    $('scan').hidden = false;
  }

  function showSecureLink(port) {
    // location.hostname keeps the brackets of an IPv6 address.
    const url = `https://${location.hostname}:${port}/`;
    $('secure-link').href = url;
    $('secure-address').textContent = url;
    $('open').hidden = false;
  }

  async function load() {
    let info;
    try {
      const r = await fetch('/api/https', { cache: 'no-store' });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      info = await r.json();
    } catch (e) {
      show('error', `Could not ask this intercom about its certificate (${e.message}). Reload the page to try again.`);
      return;
    }
    const port = Number.isInteger(info.port) ? info.port : null;
    if (port === null) {
      show('no-https', 'This intercom has no HTTPS listener, so there is nothing to trust: the microphone ' +
        'works only on the machine that runs it (opened as localhost) or behind an HTTPS proxy.');
      return;
    }
    if (typeof info.ca !== 'string' || !info.ca) {
      show('own-cert', 'This intercom has no certificate authority of its own: its https certificate was ' +
        'given to it by whoever set it up, so there is nothing to install here. If the secure page warns ' +
        'about its certificate, ask them.');
      showSecureLink(port);
      showScan(info.onboard);
      return;
    }
    $('download').href = info.ca;
    if (typeof info.mobileconfig === 'string' && info.mobileconfig) {
      $('profile').href = info.mobileconfig;
      $('profile').hidden = false;
      // On an iPhone or iPad the profile is the way: first, and the primary button.
      if (thisSystem() === 'ios') {
        $('profile').classList.add('primary');
        $('download').classList.remove('primary');
        $('download').before($('profile'));
      }
    }
    // A line break may fall after any colon, never inside a byte.
    const fp = typeof info.caFingerprint === 'string' ? info.caFingerprint : 'unknown';
    $('fingerprint').replaceChildren(...fp.split(':').flatMap((byte, i) =>
      (i ? [':', document.createElement('wbr'), byte] : [byte])));
    $('ca').hidden = false;
    $('steps').hidden = false;
    openSteps();
    showSecureLink(port);
    showScan(info.onboard);
    show('ca');
    if (onboarding) {
      $('onboard-continue').addEventListener('click', () => onboard(port, true));
      onboard(port, false);
    }
  }

  load();
})();
