/** A model folder on the local disk (Node only: the CLI and tests; the browser bundle never imports this). */
import { type FileHandle, open, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import {
  type ModelSource,
  type ProgressCallback,
  ModelFileError,
  abortedError,
  checkRelativePath,
  progressReporter,
  unlessMissing,
} from './source.ts';

/** Reads in slices so that progress moves and a cancel lands between slices on multi-GB weights. */
const CHUNK_BYTES = 1 << 20;

const isNotFound = (error: unknown) => ['ENOENT', 'ENOTDIR', 'EISDIR'].includes((error as NodeJS.ErrnoException).code ?? '');

export class FolderSource implements ModelSource {
  readonly id: string;
  readonly folder: string;

  constructor(folder: string) {
    this.folder = path.resolve(folder);
    this.id = path.basename(this.folder);
  }

  async readFile(file: string, onProgress?: ProgressCallback, signal?: AbortSignal): Promise<Uint8Array> {
    const fullPath = path.join(this.folder, ...checkRelativePath(file));
    if (signal?.aborted) throw abortedError(file, this.id);
    let handle: FileHandle | undefined;
    try {
      // Before opening: opening a FIFO waits for a writer forever, and a device such as /dev/zero never ends.
      const info = await stat(fullPath);
      if (info.isDirectory()) throw new ModelFileError('missing', file, `${fullPath} is a folder, not a file: ${this.id} needs ${file} as a file`);
      if (!info.isFile()) {
        throw new ModelFileError('not-onnx', file, `${fullPath} is not a regular file (a FIFO, socket or device): ${this.id} needs ${file} as a plain file`);
      }
      handle = await open(fullPath, 'r');
      const size = info.size;
      const bytes = new Uint8Array(size);
      const report = progressReporter(file, size, onProgress);
      report(0);
      let loaded = 0;
      while (loaded < size) {
        if (signal?.aborted) throw abortedError(file, this.id);
        const { bytesRead } = await handle.read(bytes, loaded, Math.min(CHUNK_BYTES, size - loaded), loaded);
        if (bytesRead === 0) {
          throw new ModelFileError('truncated', file, `${fullPath} shrank while it was read (${loaded} of ${size} bytes): read it again`);
        }
        loaded += bytesRead;
        report(loaded);
      }
      report(loaded, true);
      return bytes;
    } catch (error) {
      if (isNotFound(error)) {
        throw new ModelFileError('missing', file, `${file} is missing from ${this.folder}: copy it into the folder (the whole model repository is needed)`);
      }
      throw error;
    } finally {
      await handle?.close();
    }
  }

  readOptionalFile(file: string, onProgress?: ProgressCallback, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    return unlessMissing(this.readFile(file, onProgress, signal));
  }

  async listOnnxFiles(): Promise<string[]> {
    try {
      const onnx = path.join(this.folder, 'onnx');
      const entries = await readdir(onnx, { withFileTypes: true });
      // Symlinks count when they lead to a file: the Hugging Face cache links every file to a blob elsewhere.
      const isFile = async (entry: (typeof entries)[number]) =>
        entry.isFile() || (entry.isSymbolicLink() && Boolean((await stat(path.join(onnx, entry.name)).catch(() => undefined))?.isFile()));
      const files = [];
      for (const entry of entries) if (await isFile(entry)) files.push(entry.name);
      return files.sort();
    } catch (error) {
      if (isNotFound(error)) return [];
      throw error;
    }
  }
}
