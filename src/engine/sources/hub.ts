/** Model files from the Hugging Face Hub, or from any server laid out like it (`{baseUrl}/{repo}/resolve/{revision}/{path}`). */
import {
  type ModelSource,
  type ProgressCallback,
  ModelFileError,
  TooLargeError,
  abortedError,
  fileSizeLimit,
  checkRelativePath,
  progressReporter,
  readStream,
  unlessMissing,
} from './source.ts';

export interface HubSourceOptions {
  baseUrl?: string;
  revision?: string;
  fetch?: typeof globalThis.fetch;
}

// The Hub's own rule: word characters, '-' and '.', starting and ending with a word character.
const REPO_SEGMENT = String.raw`\w(?:[\w.-]*\w)?`;
const REPO_ID = new RegExp(`^${REPO_SEGMENT}/${REPO_SEGMENT}$`);

/** Graphs and weights are binary: an HTML page in their place is an error page or a login wall. */
const looksLikeHtml = (bytes: Uint8Array): boolean => {
  const head = new TextDecoder().decode(bytes.subarray(0, 64)).replace(/^\uFEFF/, '').trimStart().toLowerCase();
  return head.startsWith('<!doctype') || head.startsWith('<html');
};

function statusHint(status: number): string {
  if (status === 401 || status === 403) return 'the repository does not exist, or is private or gated; check the id (only public repositories load without a token)';
  if (status === 429) return 'the server is rate limiting; wait a minute and retry';
  if (status >= 500) return 'the server failed; retry later';
  return 'check the repository id, revision and file name, then retry';
}

/** Model files over HTTP(S); subclasses say at which URL each file lives. */
abstract class HttpSource implements ModelSource {
  protected readonly baseUrl: string;
  private readonly fetch: typeof globalThis.fetch;

  constructor(
    readonly id: string,
    baseUrl: string,
    fetch: typeof globalThis.fetch = globalThis.fetch,
    readonly revision?: string,
  ) {
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new Error(`"${baseUrl}" is not a URL: the Hub base URL looks like https://huggingface.co`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new Error(`the Hub base URL must be http(s), not ${url.protocol} ("${baseUrl}"); load a local folder as a folder instead`);
    }
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    // Calling a detached window.fetch throws "Illegal invocation" in browsers.
    this.fetch = fetch.bind(globalThis);
  }

  abstract urlFor(path: string): string;

  async readFile(path: string, onProgress?: ProgressCallback, signal?: AbortSignal, maxBytes?: number): Promise<Uint8Array> {
    const url = this.urlFor(path);
    const where = `${this.id}${!this.revision || this.revision === 'main' ? '' : ` (revision ${this.revision})`}`;
    let response: Response;
    try {
      response = await this.fetch(url, { signal });
    } catch (error) {
      if (signal?.aborted) throw abortedError(path, this.id);
      throw new ModelFileError('http', path,
        `could not reach ${this.baseUrl} for ${path} of ${where} (${(error as Error).message}): this device may be offline, and this file ` +
          'was never downloaded completely here (a model works offline after one complete download). Check the connection and the URL, then retry, or load a model downloaded before');
    }
    if (response.status === 404) {
      await response.body?.cancel();
      throw new ModelFileError('missing', path,
        `${path} is missing from ${where}: check that the repository has it (Transformers.js models keep their graphs under onnx/)`);
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw new ModelFileError('http', path,
        `${path} of ${where}: the server answered HTTP ${response.status} ${response.statusText}; ${statusHint(response.status)}`);
    }
    const notOnnx = () =>
      new ModelFileError('not-onnx', path,
        `${url} answered with an HTML page instead of ${path}: check the Hub URL (${this.baseUrl}) and that ${this.id} is a public model repository`);
    if (response.headers.get('content-type')?.includes('text/html')) {
      await response.body?.cancel();
      throw notOnnx();
    }

    // A compressed response declares the compressed length while fetch hands over decoded bytes: no total then.
    const encoding = response.headers.get('content-encoding');
    const declared = Number(response.headers.get('content-length') ?? NaN);
    const total = (!encoding || encoding === 'identity') && Number.isSafeInteger(declared) && declared >= 0 ? declared : undefined;
    const report = progressReporter(path, total, onProgress);
    // Past the size the graph implies or any sane size for its kind, the server is broken or hostile: stop there.
    const limit = Math.min(maxBytes ?? Infinity, fileSizeLimit(path) ?? Infinity);
    const tooLarge = (size: string) =>
      new ModelFileError('http', path,
        `${url} sends ${size} bytes for ${path}, more than the ${limit} ${limit === maxBytes ? 'its graph says it holds' : `a .${path.split('.').pop()} file can sensibly have`}: ` +
          'the download was stopped; check the server and the model files');
    if (total !== undefined && total > limit) {
      await response.body?.cancel();
      throw tooLarge(String(total));
    }
    let bytes: Uint8Array;
    let loaded = 0;
    try {
      bytes = response.body
        ? await readStream(response.body, total, (n) => report((loaded = n)), signal, limit)
        : new Uint8Array(0);
    } catch (error) {
      if (signal?.aborted) throw abortedError(path, this.id);
      if (error instanceof TooLargeError) throw tooLarge(`more than ${limit}`);
      throw new ModelFileError('truncated', path,
        `the download of ${path} from ${where} broke off after ${loaded}${total === undefined ? '' : ` of ${total}`} bytes ` +
          `(${(error as Error).message}): retry`);
    }
    if (total !== undefined && bytes.length < total) {
      throw new ModelFileError('truncated', path,
        `the download of ${path} from ${where} ended after ${bytes.length} of ${total} bytes: the connection was cut; retry`);
    }
    if (total !== undefined && bytes.length > total) {
      throw new ModelFileError('http', path,
        `${this.baseUrl} sent ${bytes.length} bytes for ${path} of ${where} but declared ${total}: the server or a proxy is broken; retry or use another Hub URL`);
    }
    if (looksLikeHtml(bytes)) throw notOnnx();
    report(bytes.length, true);
    return bytes;
  }

  readOptionalFile(path: string, onProgress?: ProgressCallback, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    return unlessMissing(this.readFile(path, onProgress, signal));
  }

  /** The resolve endpoint cannot list a folder: callers pick a variant from config.json or preferences. */
  async listOnnxFiles(): Promise<string[] | undefined> {
    return undefined;
  }
}

export class HubSource extends HttpSource {
  declare readonly revision: string;

  constructor(id: string, { baseUrl = 'https://huggingface.co', revision = 'main', fetch }: HubSourceOptions = {}) {
    if (!REPO_ID.test(id) || id.includes('..')) {
      throw new Error(`"${id}" is not a Hub repository id: use owner/name, e.g. HuggingFaceTB/SmolLM2-135M-Instruct`);
    }
    if (!revision) throw new Error('the Hub revision is empty: use a branch, tag or commit such as "main"');
    super(id, baseUrl, fetch, revision);
  }

  /** Revisions such as "refs/pr/1" are one URL segment on the Hub, hence encodeURIComponent, as Transformers.js does. */
  urlFor(path: string): string {
    const encodedPath = checkRelativePath(path).map(encodeURIComponent).join('/');
    return `${this.baseUrl}/${this.id}/resolve/${encodeURIComponent(this.revision)}/${encodedPath}`;
  }
}

/** A model folder served as plain files (`{folderUrl}/{path}`): the app's local models, any static host. */
export class FolderUrlSource extends HttpSource {
  /** `onnxFiles`: the names under onnx/, when the server lists them (a static host cannot be asked). */
  constructor(folderUrl: string, { fetch, onnxFiles }: Pick<HubSourceOptions, 'fetch'> & { onnxFiles?: string[] } = {}) {
    super(decodeURIComponent(folderUrl.replace(/\/+$/, '').split('/').pop() ?? folderUrl), folderUrl, fetch);
    this.onnxFiles = onnxFiles;
  }

  private readonly onnxFiles: string[] | undefined;

  override async listOnnxFiles(): Promise<string[] | undefined> {
    return this.onnxFiles;
  }

  urlFor(path: string): string {
    return `${this.baseUrl}/${checkRelativePath(path).map(encodeURIComponent).join('/')}`;
  }
}
