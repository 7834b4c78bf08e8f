// Tiller's service worker: the app shell keeps working offline (network first, the last good copy when
// there is no network), and every page it serves is cross-origin isolated, so multi-threaded WASM works
// on static hosts that cannot set headers (GitHub Pages). Model files are cached by the engine itself.
const APP_CACHE = 'tiller-app-v1';

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin || url.pathname.includes('/models/')) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(APP_CACHE);
      try {
        const response = await fetch(request);
        if (response.ok) await cache.put(request, response.clone()).catch(() => undefined);
        return isolated(response);
      } catch (error) {
        const cached = await cache.match(request);
        if (cached) return isolated(cached);
        throw error;
      }
    })(),
  );
});

function isolated(response) {
  if (response.status === 0) return response; // opaque: headers cannot be changed
  const headers = new Headers(response.headers);
  headers.set('Cross-Origin-Opener-Policy', 'same-origin');
  headers.set('Cross-Origin-Embedder-Policy', 'require-corp');
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}
