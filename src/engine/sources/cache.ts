/**
 * Model files kept in the browser's Cache Storage, so the second load of a model downloads nothing (one HEAD
 * request per file checks that the server's copy has not changed) and works offline. Only complete, successful, non-HTML answers are stored (and 404s, as the memory
 * that an optional file does not exist); a full disk never stops a load.
 */

export const MODEL_CACHE = 'tiller-models';

interface CacheLike {
  match(url: string): Promise<Response | undefined>;
  put(url: string, response: Response): Promise<void>;
  keys(): Promise<readonly { url: string }[]>;
  delete(url: string): Promise<boolean>;
}
interface CacheStorageLike {
  open(name: string): Promise<CacheLike>;
  delete(name: string): Promise<boolean>;
}

const cacheStorage = (): CacheStorageLike | undefined => (globalThis as { caches?: CacheStorageLike }).caches;

export const browserCacheAvailable = (): boolean => cacheStorage() !== undefined;

/** Writes still under way: a full disk may refuse one after the model has loaded, so reports wait for them. */
const pendingWrites = new Set<Promise<void>>();

/** What went wrong storing a file, in words for the person (a full disk is the usual case). */
function cacheProblem(url: string, error: Error): Error {
  const file = url.split('/').slice(-2).join('/');
  const full = error.name === 'QuotaExceededError' || /quota/i.test(error.message);
  return new Error(full
    ? `the browser's storage for this site is full (${file} did not fit)`
    : `${file} could not be stored (${error.message})`);
}

/** Validators a server may send: a cached copy differs from the server's file when any of them differs. */
const VALIDATORS = ['etag', 'last-modified', 'content-length'];

/**
 * Whether the server still has the file the cache holds: a HEAD request compared on ETag, Last-Modified and
 * size (a presenter may have replaced a model). Unreachable, or a server that cannot say: keep the copy.
 */
async function stillCurrent(fetchImpl: typeof globalThis.fetch, url: string, cached: Response, signal?: AbortSignal | null): Promise<boolean> {
  let head: Response;
  try {
    head = await fetchImpl(url, { method: 'HEAD', signal });
  } catch (error) {
    if (signal?.aborted) throw error;
    return true; // offline: the cached copy is all there is
  }
  if (!head.ok) return true;
  return VALIDATORS.every((name) => {
    const [was, now] = [cached.headers.get(name), head.headers.get(name)];
    return was === null || now === null || was === now;
  });
}

export interface CachingFetchOptions {
  onCacheError?: (error: Error) => void;
  /** Called with each URL answered from the cache (the engine drops those if the model then fails to load). */
  onHit?: (url: string) => void;
}

/** A fetch that answers from the cache when the server has nothing newer, and stores what it downloads. */
export function cachingFetch(fetchImpl: typeof globalThis.fetch, { onCacheError, onHit }: CachingFetchOptions = {}): typeof globalThis.fetch {
  return async (input, init) => {
    const storage = cacheStorage();
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const cache = storage ? await storage.open(MODEL_CACHE).catch(() => undefined) : undefined;
    const hit = await cache?.match(url);
    if (hit?.ok && (await stillCurrent(fetchImpl, url, hit, init?.signal))) {
      onHit?.(url);
      return hit;
    }
    let response: Response;
    try {
      response = await fetchImpl(input, init);
    } catch (error) {
      // Offline: an optional file known to be missing (chat_template.jinja, say) is still missing.
      if (hit) return hit;
      throw error;
    }
    const html = response.headers.get('content-type')?.includes('text/html');
    // Missing files are remembered too, so that a model loads offline; online they are asked for again.
    if (cache && response.status === 404) {
      cache.put(url, response.clone()).catch(() => undefined);
    } else if (cache && response.ok && !html) {
      // A cut-off or cancelled body makes put() reject (a TypeError or AbortError), so a broken download is never
      // stored; the load itself reports those. Anything else, a full disk above all, is worth telling.
      const write = cache.put(url, response.clone()).catch((error: Error) => {
        if (error.name !== 'TypeError' && error.name !== 'AbortError') onCacheError?.(cacheProblem(url, error));
      });
      pendingWrites.add(write);
      void write.finally(() => pendingWrites.delete(write));
    }
    return response;
  };
}

export async function modelCacheSize(): Promise<{ files: number; bytes: number } | undefined> {
  const storage = cacheStorage();
  if (!storage) return undefined;
  await Promise.all(pendingWrites);
  const cache = await storage.open(MODEL_CACHE);
  let bytes = 0;
  const keys = await cache.keys();
  let files = 0;
  for (const request of keys) {
    const response = await cache.match(request.url);
    if (!response?.ok) continue;
    files++;
    bytes += Number(response.headers.get('content-length') ?? 0);
  }
  return { files, bytes };
}

/** Removes these cached files (a model that failed to load from them is then downloaded again). */
export async function dropCachedFiles(urls: Iterable<string>): Promise<void> {
  const storage = cacheStorage();
  if (!storage) return;
  const cache = await storage.open(MODEL_CACHE);
  for (const url of urls) await cache.delete(url);
}

/** Removes every cached model file, or (with `keepPrefix`) all but those of the model at that URL. */
export async function clearModelCache(keepPrefix?: string): Promise<void> {
  const storage = cacheStorage();
  if (!storage) return;
  await Promise.all(pendingWrites);
  if (keepPrefix === undefined) {
    await storage.delete(MODEL_CACHE);
    return;
  }
  const cache = await storage.open(MODEL_CACHE);
  for (const request of await cache.keys()) if (!request.url.startsWith(keepPrefix)) await cache.delete(request.url);
}

/**
 * The Hub repositories (at `baseUrl`, any revision) whose config.json and at least one ONNX graph are in the
 * cache: those load with no download. The page reads this to mark models as cached before loading one.
 */
export async function cachedHubRepos(baseUrl: string): Promise<Set<string>> {
  const storage = cacheStorage();
  const found = new Set<string>();
  if (!storage) return found;
  const prefix = `${baseUrl.replace(/\/+$/, '')}/`;
  const files = new Map<string, { config?: boolean; onnx?: boolean }>();
  const cache = await storage.open(MODEL_CACHE);
  for (const { url } of await cache.keys()) {
    const match = url.startsWith(prefix) ? /^([^/]+\/[^/]+)\/resolve\/[^/]+\/(.+)$/.exec(url.slice(prefix.length)) : null;
    // 404s are cached too (the memory that an optional file is missing): only files that are there count.
    if (!match || !(match[2] === 'config.json' || match[2].endsWith('.onnx')) || !(await cache.match(url))?.ok) continue;
    const entry = files.get(match[1]) ?? {};
    if (match[2] === 'config.json') entry.config = true;
    if (/^onnx\/[^/]+\.onnx$/.test(match[2])) entry.onnx = true;
    files.set(match[1], entry);
  }
  for (const [repo, entry] of files) if (entry.config && entry.onnx) found.add(repo);
  return found;
}
