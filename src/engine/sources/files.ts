/** Model files the user picked in the browser (a folder through webkitdirectory, or files one by one). */
import {
  type ModelSource,
  type ProgressCallback,
  ModelFileError,
  abortedError,
  checkRelativePath,
  progressReporter,
  readStream,
  unlessMissing,
} from './source.ts';

export interface PickedFile {
  /** Relative to the model folder, or webkitRelativePath-style with the folder itself in front. */
  path: string;
  file: Blob;
}

const GRAPH_FILE = /\.(onnx|onnx_data(_\d+)?|data)$/;

/**
 * Paths relative to the model root. A picked folder arrives as "SmolLM2/onnx/model.onnx": strip the
 * folders every file shares, but never "onnx/" itself (the user may have picked only that folder).
 * Files picked one by one have no folders at all: graphs and their data then go under onnx/, as in the
 * Transformers.js layout.
 */
function modelPaths(paths: string[]): { paths: string[]; folder: string | undefined } {
  let split = paths.map((p) => p.replace(/\\/g, '/').replace(/^(\.?\/)+/, '').split('/'));
  const folders: string[] = [];
  for (;;) {
    const first = split[0]?.[0];
    if (first === undefined || first === 'onnx' || !split.every((s) => s.length > 1 && s[0] === first)) break;
    folders.push(first);
    split = split.map((s) => s.slice(1));
  }
  const flat = split.every((s) => s.length === 1);
  return {
    paths: split.map((s) => (flat && GRAPH_FILE.test(s[0]) ? `onnx/${s[0]}` : s.join('/'))),
    folder: folders.at(-1),
  };
}

export class PickedFilesSource implements ModelSource {
  readonly id: string;
  private readonly files = new Map<string, Blob>();

  constructor(picked: PickedFile[]) {
    const { paths, folder } = modelPaths(picked.map((p) => p.path));
    paths.forEach((path, i) => this.files.set(path, picked[i].file));
    this.id = folder ?? 'picked files';
  }

  async readFile(path: string, onProgress?: ProgressCallback, signal?: AbortSignal): Promise<Uint8Array> {
    checkRelativePath(path);
    const blob = this.files.get(path);
    if (!blob) {
      throw new ModelFileError('missing', path,
        `${path} is not among the files picked from ${this.id}: pick the whole model folder (config.json beside onnx/), including ${path}`);
    }
    if (signal?.aborted) throw abortedError(path, this.id);
    const report = progressReporter(path, blob.size, onProgress);
    let bytes: Uint8Array;
    try {
      bytes = await readStream(blob.stream(), blob.size, report, signal);
    } catch (error) {
      if (signal?.aborted) throw abortedError(path, this.id);
      throw new ModelFileError('truncated', path,
        `${path} of ${this.id} could not be read (${(error as Error).message}); it may have changed on disk since it was picked: pick the folder again`);
    }
    if (bytes.length !== blob.size) {
      throw new ModelFileError('truncated', path,
        `${path} of ${this.id} gave ${bytes.length} of ${blob.size} bytes; it may have changed on disk since it was picked: pick the folder again`);
    }
    report(bytes.length, true);
    return bytes;
  }

  readOptionalFile(path: string, onProgress?: ProgressCallback, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    return unlessMissing(this.readFile(path, onProgress, signal));
  }

  async listOnnxFiles(): Promise<string[]> {
    return [...this.files.keys()]
      .filter((path) => path.startsWith('onnx/') && !path.includes('/', 'onnx/'.length))
      .map((path) => path.slice('onnx/'.length))
      .sort();
  }
}
