// The service worker of the installable app (served as /sw.js, scope: the whole site).
// It keeps a copy of the app shell (the pages, their scripts, styles, icons and the manifest) so
// that the installed app opens, and says plainly that the intercom cannot be reached, while
// the Pi is off or out of range. Nothing else goes through it: see NEVER below.
'use strict';

// The cache name changes whenever any embedded file changes: build.rs writes a hash of every
// other file of www/ over the placeholder (served from --www, the placeholder stays and the
// name is fixed). The browser checks sw.js itself on every navigation (it is served with
// Cache-Control: no-cache), sees different bytes, installs this new worker, which fills the new
// cache; on activation the old caches are deleted. So an upgraded daemon's pages are picked up
// with no manual step, and two versions of the shell are never mixed in one cache.
const VERSION = '__SHELL_VERSION__';
const CACHE = `intercom-shell-${VERSION}`;
const SHELL = [
  'index.html', 'room.html', 'door.html',
  'style.css', 'room.css', 'door.css',
  'qr.js', 'signal.js', 'call.js', 'app.js', 'room.js', 'door.js', 'pwa.js',
  'favicon.svg', 'manifest.webmanifest',
  'icon-192.png', 'icon-512.png', 'icon-maskable-512.png', 'apple-touch-icon.png',
];
// Live data, signaling and the daemon's own answers: never cached, never intercepted (the
// browser fetches them as if there were no worker). A stale peer list, call log, snapshot or
// CA certificate would be wrong, and a WebSocket cannot go through a worker anyway.
const NEVER = /^\/(api\/|ws\b|peerjs|snapshots\/|metrics\b|healthz\b|intercomd-ca\.)/;
// Network first: how long a page waits for the Pi before it is served from the cache.
const NETWORK_WAIT_MS = 2500;

const scopePath = new URL(self.registration.scope).pathname;
// The cache key of a shell request, or null: the request is not the shell's.
function shellKey(url) {
  if (url.origin !== self.location.origin || !url.pathname.startsWith(scopePath)) return null;
  let name = url.pathname.slice(scopePath.length);
  if (NEVER.test(`/${name}`)) return null;
  if (name === '') name = 'index.html';
  return SHELL.includes(name) ? new URL(name, self.registration.scope).href : null;
}

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    // reload: straight from the daemon, not from the browser's HTTP cache.
    await cache.addAll(SHELL.map((name) => new Request(name, { cache: 'reload' })));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith('intercom-shell-') && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

// Network first, with the cache as the fallback, rather than cache first: the daemon serves
// every page with an ETag and Cache-Control: no-cache, so on the home network a load costs a
// 304 of a few bytes and the page always matches the daemon it talks to (a cache-first page
// would be the old version for one load after every upgrade). When the Pi does not answer
// within NETWORK_WAIT_MS (switched off: the connection attempt hangs) or refuses (daemon
// stopped), the cached copy is served, so the app still opens and shows its offline state.
self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const key = shellKey(new URL(request.url));
  if (!key) return;
  event.respondWith(networkFirst(request, key));
});

async function networkFirst(request, key) {
  const cache = await caches.open(CACHE);
  const network = fetch(request).then((response) => {
    if (response.ok && response.status === 200 && response.type === 'basic') {
      cache.put(key, response.clone()).catch(() => {});
    }
    return response;
  });
  network.catch(() => {}); // a failure after the cache answered is no one's business
  let timer;
  const slow = new Promise((resolve) => { timer = setTimeout(resolve, NETWORK_WAIT_MS); });
  try {
    const first = await Promise.race([network, slow]);
    if (first) return first;
  } catch (_) {
    // Refused or no network: the cache below.
  } finally {
    clearTimeout(timer);
  }
  const cached = await cache.match(key);
  if (cached) return cached;
  return network; // not cached (yet): the network's answer or its error, as without a worker
}

// A tap on a ring notification (shown by pwa.js): back to the page that rings, which already
// shows its ringing screen; if the browser closed it meanwhile, open the page it came from.
self.addEventListener('notificationclick', (event) => {
  const note = event.notification;
  note.close();
  const url = new URL((note.data && note.data.url) || 'index.html', self.registration.scope);
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    const page = windows.find((w) => w.url === url.href) ||
      windows.find((w) => new URL(w.url).pathname === url.pathname);
    if (page) {
      page.postMessage({ type: 'show-ring', tag: note.tag });
      await page.focus();
    } else {
      await self.clients.openWindow(url.href);
    }
  })());
});
