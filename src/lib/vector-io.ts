/** Steering vectors to and from files: Tiller JSON (with provenance) and llama.cpp GGUF control vectors. */
import { readControlVectorGguf, writeControlVectorGguf } from '../engine/directions/gguf.ts';
import type { ModelInfo } from '../engine/model/steerable-model.ts';
import { type VectorFile, assertVectorFits, parseVectorFile, serializeVectorFile, vectorFileFromControlVector } from '../engine/directions/vector-file.ts';

/** Where the page keeps the direction computed for one model and preset (the persona panel and the 2-D pad share it). */
export const savedVectorKey = (modelId: string, presetId: string) => `tiller.persona.vector.${modelId}.${presetId}`;

export interface Exported {
  name: string;
  bytes: Uint8Array | string;
  mime: string;
  /** Something the person should know about what was left out. */
  note?: string;
}

const baseName = (file: VectorFile) => `${file.model.id.split('/').pop()}-${file.preset ?? 'direction'}`;

export function exportJson(file: VectorFile): Exported {
  return { name: `${baseName(file)}.json`, bytes: serializeVectorFile(file), mime: 'application/json' };
}

/** llama.cpp cannot take a vector for block 0, so layer 0 is left out of the GGUF file. */
export function exportGguf(file: VectorFile, architecture = 'llama'): Exported {
  const directions = file.directions.filter((d) => d.layer > 0).map(({ layer, vector }) => ({ layer, vector }));
  if (directions.length === 0) throw new Error('this vector has a direction for layer 0 only, which llama.cpp control vectors cannot hold');
  const skipped = directions.length < file.directions.length;
  return {
    name: `${baseName(file)}.gguf`,
    bytes: writeControlVectorGguf({ modelHint: architecture, directions }),
    mime: 'application/octet-stream',
    note: skipped ? 'Layer 0 was left out of the GGUF file: llama.cpp control vectors cannot steer block 0.' : undefined,
  };
}

const isGguf = (bytes: Uint8Array) => bytes.length >= 4 && String.fromCharCode(...bytes.subarray(0, 4)) === 'GGUF';

/** Reads a JSON or GGUF vector file and checks that it fits the loaded model; errors name the problem. */
export function importVector(bytes: Uint8Array, fileName: string, model: ModelInfo): VectorFile {
  const file = isGguf(bytes)
    ? vectorFileFromControlVector(readControlVectorGguf(bytes, fileName), model)
    : parseVectorFile(new TextDecoder().decode(bytes), fileName);
  assertVectorFits(file, model);
  return file;
}

export function download(exported: Exported): void {
  const blob = new Blob([exported.bytes as BlobPart], { type: exported.mime });
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = exported.name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
