/**
 * Where a model's files come from: the Hub (or a server laid out like it), files the user picked in the
 * browser, or a local folder (Node). The loader only ever asks a source for whole files by path.
 */

export interface FileProgress {
  file: string;
  loaded: number;
  total: number | undefined;
  done: boolean;
}

export type ProgressCallback = (p: FileProgress) => void;

export interface ModelSource {
  /** e.g. "HuggingFaceTB/SmolLM2-135M-Instruct", or a folder name. */
  readonly id: string;
  readonly revision?: string;
  /**
   * Whole file as bytes; throws ModelFileError (kind 'missing') if absent. Reports progress as bytes done/total.
   * `maxBytes`: the size the caller knows the file must not exceed (a data file's extent in its graph).
   */
  readFile(path: string, onProgress?: ProgressCallback, signal?: AbortSignal, maxBytes?: number): Promise<Uint8Array>;
  /** Optional file, undefined if absent (e.g. chat_template.jinja, generation_config.json). */
  readOptionalFile(path: string, onProgress?: ProgressCallback, signal?: AbortSignal): Promise<Uint8Array | undefined>;
  /** File names under onnx/ when the source can list them (folders, picked files), else undefined (Hub). */
  listOnnxFiles(): Promise<string[] | undefined>;
}

export type ModelFileErrorKind = 'missing' | 'truncated' | 'http' | 'not-onnx' | 'aborted';

export class ModelFileError extends Error {
  constructor(
    readonly kind: ModelFileErrorKind,
    readonly file: string,
    message: string,
  ) {
    super(message);
    this.name = 'ModelFileError';
  }
}

export const abortedError = (file: string, id: string): ModelFileError =>
  new ModelFileError('aborted', file, `reading ${file} from ${id} was cancelled; load the model again to retry`);

/** readOptionalFile in terms of readFile: only a missing file becomes undefined, every other failure still throws. */
export async function unlessMissing(read: Promise<Uint8Array>): Promise<Uint8Array | undefined> {
  try {
    return await read;
  } catch (error) {
    if (error instanceof ModelFileError && error.kind === 'missing') return undefined;
    throw error;
  }
}

/** Paths are relative to the model root; refuse ones that could climb out of it. */
export function checkRelativePath(path: string): string[] {
  const segments = path.split('/');
  if (segments.some((segment) => segment === '' || segment === '.' || segment === '..' || segment.includes('\\'))) {
    throw new Error(`"${path}" is not a file path inside the model folder (expected e.g. "onnx/model.onnx")`);
  }
  return segments;
}

/**
 * Progress for one file, throttled to about a hundred calls: the callback may cross a worker boundary
 * per call. The first call and the final (done) call always go through.
 */
export function progressReporter(file: string, total: number | undefined, onProgress?: ProgressCallback) {
  const step = total ? Math.max(total / 100, 64 * 1024) : 1 << 20;
  let reported = -1;
  return (loaded: number, done = false): void => {
    if (!onProgress || (!done && reported >= 0 && loaded - reported < step)) return;
    reported = loaded;
    onProgress({ file, loaded, total, done });
  };
}

/** What an external-data file may be called: weights, never a name a browser would render or run (.svg, .html, .js). */
export const DATA_FILE_NAME = /^[\w-][\w.-]*\.(onnx_data(_\d+)?|data|bin)$/;

/** JSON and text files (config, tokenizer, template): the largest real tokenizer.json is about 35 MB. */
export const TEXT_FILE_LIMIT = 64 << 20;
/** Protobuf cannot encode a graph over 2 GiB; larger models keep their weights in external data files. */
export const GRAPH_FILE_LIMIT = 2 ** 31;

/** The most bytes a file under this name can sensibly have; undefined for weight files (their graph says). */
export function fileSizeLimit(path: string): number | undefined {
  if (/\.onnx$/.test(path)) return GRAPH_FILE_LIMIT;
  if (/\.(json|jinja|txt|model)$/.test(path)) return TEXT_FILE_LIMIT;
  return undefined;
}

export class TooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`more than ${limit} bytes`);
  }
}

/**
 * Reads a byte stream to the end, or throws TooLargeError past `limit` bytes (a server that never stops). With `expected` (a declared length) the buffer is allocated once;
 * the caller compares the returned length with it, since only the caller knows what a mismatch means.
 */
export async function readStream(
  stream: ReadableStream<Uint8Array>,
  expected: number | undefined,
  report: (loaded: number) => void,
  signal?: AbortSignal,
  limit = Infinity,
): Promise<Uint8Array> {
  const reader = stream.getReader();
  let buffer = new Uint8Array(expected ?? 1 << 16);
  let loaded = 0;
  report(0);
  try {
    for (;;) {
      signal?.throwIfAborted();
      const { done, value } = await reader.read();
      if (done) break;
      if (loaded + value.length > limit) throw new TooLargeError(limit);
      if (loaded + value.length > buffer.length) {
        const grown = new Uint8Array(Math.max(buffer.length * 2, loaded + value.length));
        grown.set(buffer.subarray(0, loaded));
        buffer = grown;
      }
      buffer.set(value, loaded);
      loaded += value.length;
      report(loaded);
    }
  } catch (error) {
    await reader.cancel().catch(() => undefined);
    throw error;
  }
  return loaded === buffer.length ? buffer : buffer.slice(0, loaded);
}
