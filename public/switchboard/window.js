// window.js: the page lifecycle events the client follows: `pagehide` (leave, or save the
// session), `pageshow` of a page restored from the back/forward cache, and `online`.

/**
 * Listens to the window's lifecycle events.
 * @param {{ pagehide: () => void, restored: () => void, online: () => void }} on `restored`
 *   runs on a `pageshow` that brings the page back from the back/forward cache.
 * @returns {(() => void) | null} What removes the listeners; null where there is no
 *   `addEventListener` to listen with.
 */
export function watchWindow(on) {
  if (typeof globalThis.addEventListener !== 'function') return null;
  const onPagehide = () => on.pagehide();
  const onPageshow = (/** @type {PageTransitionEvent} */ event) => {
    if (event.persisted) on.restored();
  };
  const onOnline = () => on.online();
  globalThis.addEventListener('pagehide', onPagehide);
  globalThis.addEventListener('pageshow', onPageshow);
  globalThis.addEventListener('online', onOnline);
  return () => {
    globalThis.removeEventListener('pagehide', onPagehide);
    globalThis.removeEventListener('pageshow', onPageshow);
    globalThis.removeEventListener('online', onOnline);
  };
}
