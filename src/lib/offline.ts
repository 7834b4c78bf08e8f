/**
 * Registers the service worker (public/sw.js) in built apps: it keeps the app working offline, and on
 * hosts that cannot send cross-origin isolation headers it adds them, after one reload.
 */
export async function registerServiceWorker(): Promise<void> {
  if (!import.meta.env.PROD || !('serviceWorker' in navigator)) return;
  try {
    await navigator.serviceWorker.register(`${import.meta.env.BASE_URL}sw.js`);
    await navigator.serviceWorker.ready;
    // Isolation comes with the worker's responses: reload once if this page was served without it.
    if (!crossOriginIsolated && !sessionStorage.getItem('tiller.isolation-reload')) {
      sessionStorage.setItem('tiller.isolation-reload', '1');
      location.reload();
    }
  } catch (error) {
    console.warn('Tiller: no service worker, so no offline app shell:', error);
  }
}
