/**
 * Model files kept in the browser's Cache Storage, so the second load of a model makes no requests and
 * works offline. Only complete, successful, non-HTML answers are stored; a full disk never stops a load.
 */

export const MODEL_CACHE = 'tiller-models';

interface CacheLike {
  match(url: string): Promise<Response | undefined>;
  put(url: string, response: Response): Promise<void>;
  keys(): Promise<readonly { url: string }[]>;
}
interface CacheStorageLike {
  open(name: string): Promise<CacheLike>;
  delete(name: string): Promise<boolean>;
}

const cacheStorage = (): CacheStorageLike | undefined => (globalThis as { caches?: CacheStorageLike }).caches;

export const browserCacheAvailable = (): boolean => cacheStorage() !== undefined;

/** A fetch that answers from the cache when it can and stores what it downloads. */
export function cachingFetch(fetchImpl: typeof globalThis.fetch, onCacheError?: (error: Error) => void): typeof globalThis.fetch {
  return async (input, init) => {
    const storage = cacheStorage();
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const cache = storage ? await storage.open(MODEL_CACHE).catch(() => undefined) : undefined;
    const hit = await cache?.match(url);
    if (hit) return hit;
    const response = await fetchImpl(input, init);
    const html = response.headers.get('content-type')?.includes('text/html');
    if (cache && response.ok && !html) {
      // A cut-off body makes put() reject, so a broken download is never stored.
      cache.put(url, response.clone()).catch((error: Error) => onCacheError?.(error));
    }
    return response;
  };
}

export async function modelCacheSize(): Promise<{ files: number; bytes: number } | undefined> {
  const storage = cacheStorage();
  if (!storage) return undefined;
  const cache = await storage.open(MODEL_CACHE);
  let bytes = 0;
  const keys = await cache.keys();
  for (const request of keys) {
    const response = await cache.match(request.url);
    bytes += Number(response?.headers.get('content-length') ?? 0);
  }
  return { files: keys.length, bytes };
}

export async function clearModelCache(): Promise<void> {
  await cacheStorage()?.delete(MODEL_CACHE);
}
