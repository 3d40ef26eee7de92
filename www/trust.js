// trust.html: asks the daemon (GET /api/https → {port, ca, caFingerprint}) for its https port and
// local CA, and shows the download, the fingerprint, the steps for this device's system and the
// link to the https page; or says why there is nothing to install.
// body data-ca: loading → ca (a CA to install) | own-cert (--tls-cert) | no-https | error.
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
      return;
    }
    $('download').href = info.ca;
    // A line break may fall after any colon, never inside a byte.
    const fp = typeof info.caFingerprint === 'string' ? info.caFingerprint : 'unknown';
    $('fingerprint').replaceChildren(...fp.split(':').flatMap((byte, i) =>
      (i ? [':', document.createElement('wbr'), byte] : [byte])));
    $('ca').hidden = false;
    $('steps').hidden = false;
    openSteps();
    showSecureLink(port);
    show('ca');
  }

  load();
})();
