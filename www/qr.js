// qr.js: the QR code that takes a phone to this intercom, for the plain-http pages, the status
// page and the trust page. The daemon draws it (GET /api/qr?text=, an SVG made in the binary):
// no outside service ever sees the address.
'use strict';

// A figure with the code for url, a caption and the address written out. data-url keeps the
// address, so a caller can tell whether it changed.
function onboardQr(url, caption) {
  const figure = document.createElement('figure');
  figure.className = 'onboard-qr';
  figure.dataset.testid = 'onboard-qr';
  figure.dataset.url = url;
  const img = document.createElement('img');
  img.src = `/api/qr?text=${encodeURIComponent(url)}`;
  img.alt = `QR code for ${url}`;
  img.width = 200;
  img.height = 200;
  const text = document.createElement('figcaption');
  const address = document.createElement('code');
  address.textContent = url;
  text.append(caption, document.createElement('br'), address);
  figure.append(img, text);
  return figure;
}
