import { readFileSync } from 'node:fs';
import path from 'node:path';
import { openCheckPair } from '../../src/engine/model/check.ts';
import { type LoadOptions, loadModel } from '../../src/engine/model/load.ts';
import { FolderSource } from '../../src/engine/sources/node-folder.ts';
import { SHARED, sharedGraphPath, sharedModel } from './paths.ts';

export { STORIES_REFERENCE } from './reference.ts';

export function loadShared(name: 'stories' | 'builder', options: LoadOptions = {}) {
  return loadModel(new FolderSource(sharedModel(SHARED[name].folder)), { backend: 'wasm', ...options });
}

/** The unmodified graph and its instrumented twin, as `tiller check` opens them. */
export function graphPair(name: keyof typeof SHARED) {
  const file = sharedGraphPath(name);
  const readExternal = async (location: string) => new Uint8Array(readFileSync(path.join(path.dirname(file), location)));
  return openCheckPair(new Uint8Array(readFileSync(file)), path.basename(file), readExternal, 'wasm');
}
