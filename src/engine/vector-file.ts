/**
 * Steering vector files (JSON): one or more per-layer directions for a model, with where they came from.
 * Validated on the way in, so a wrong file is refused with the field named.
 */

export interface VectorDirection {
  /** 0-based decoder layer whose output residual the vector is added to. */
  layer: number;
  vector: Float32Array;
}

export interface VectorFile {
  format: 'tiller.vector';
  version: 1;
  model: { id: string; revision?: string };
  hiddenSize: number;
  directions: VectorDirection[];
  /** Free-form provenance (method, prompts, date …). */
  provenance?: Record<string, unknown>;
}

export class VectorFileError extends Error {}

export function parseVectorFile(text: string, fileName = 'vector file'): VectorFile {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new VectorFileError(`${fileName} is not JSON (${(error as Error).message})`);
  }
  const fail = (field: string, expected: string): never => {
    throw new VectorFileError(`${fileName}: field "${field}" ${expected}`);
  };
  if (typeof data !== 'object' || data === null) return fail('(root)', 'must be an object');
  const root = data as Record<string, unknown>;
  if (root.format !== 'tiller.vector') fail('format', 'must be "tiller.vector"');
  if (root.version !== 1) fail('version', `must be 1 (this file says ${JSON.stringify(root.version)})`);
  const model = root.model as Record<string, unknown> | undefined;
  if (!model || typeof model.id !== 'string') fail('model.id', 'must name the model the vector was made for');
  const hiddenSize = root.hiddenSize;
  if (!Number.isInteger(hiddenSize) || (hiddenSize as number) <= 0) fail('hiddenSize', 'must be a positive integer');
  if (!Array.isArray(root.directions) || root.directions.length === 0) fail('directions', 'must be a non-empty list');
  const directions = (root.directions as unknown[]).map((entry, index) => {
    const direction = entry as Record<string, unknown>;
    if (!Number.isInteger(direction.layer) || (direction.layer as number) < 0) fail(`directions[${index}].layer`, 'must be a layer index ≥ 0');
    const values = direction.vector;
    if (!Array.isArray(values) || values.length !== hiddenSize || !values.every((v) => typeof v === 'number' && Number.isFinite(v))) {
      fail(`directions[${index}].vector`, `must hold ${hiddenSize} finite numbers`);
    }
    return { layer: direction.layer as number, vector: Float32Array.from(values as number[]) };
  });
  return {
    format: 'tiller.vector',
    version: 1,
    model: { id: model!.id as string, revision: typeof model!.revision === 'string' ? model!.revision : undefined },
    hiddenSize: hiddenSize as number,
    directions,
    provenance: typeof root.provenance === 'object' && root.provenance !== null ? (root.provenance as Record<string, unknown>) : undefined,
  };
}

export function serializeVectorFile(file: VectorFile): string {
  return JSON.stringify({ ...file, directions: file.directions.map((d) => ({ layer: d.layer, vector: Array.from(d.vector) })) }, null, 1);
}

/** Refuses a vector made for another shape of model. */
export function assertVectorFits(file: VectorFile, model: { id: string; hiddenSize: number; layerCount: number }): void {
  if (file.hiddenSize !== model.hiddenSize) {
    throw new VectorFileError(
      `this vector was made for ${file.model.id} (hidden size ${file.hiddenSize}); ${model.id} has hidden size ${model.hiddenSize}. ` +
        'Compute a direction for this model instead.',
    );
  }
  for (const direction of file.directions) {
    if (direction.layer >= model.layerCount) {
      throw new VectorFileError(`the vector file has a direction for layer ${direction.layer}, but ${model.id} has layers 0–${model.layerCount - 1}`);
    }
  }
}
