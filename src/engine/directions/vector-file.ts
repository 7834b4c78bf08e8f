/**
 * Steering vector files (JSON): per-layer directions for one model, with where they came from, so a file
 * says which model, prompts and method made it. Validated on the way in: a wrong file is refused with the
 * field named, and a vector for another model is refused before it steers anything.
 */
import { type DirectionMethod, type ExampleProjections } from './directions.ts';
import { dot, vectorLength } from '../vectors.ts';
import type { ExtractionMode, Extraction } from './extract.ts';
import type { ControlVector } from './gguf.ts';

export interface VectorDirection {
  /** 0-based decoder layer whose output residual the vector is added to. */
  layer: number;
  vector: Float32Array;
  norm: number;
  /** Mean token residual length at this layer: present when the file can express relative strengths. */
  meanResidualNorm?: number;
  auroc?: number;
  separation?: number;
  /** The contrastive examples' projections on the unit direction (fitted and held out), when extracted. */
  projections?: ExampleProjections;
  /** What steering here does (directions/steerability.ts): nats per token of positive over negative, +s vs −s. */
  steerability?: number;
  /** The examples' perplexity under ±s over unsteered, the worse of the two. */
  perplexityRatio?: number;
  /** Largest relative strength that keeps the examples' perplexity within 1.5× (where it was measured). */
  coherentStrength?: number;
}

export interface VectorFile {
  format: 'tiller.vector';
  version: 1;
  model: { id: string; revision?: string };
  hiddenSize: number;
  /** How the directions were made ('gguf' for vectors imported from a control-vector file). */
  method?: DirectionMethod | 'gguf';
  mode?: ExtractionMode;
  preset?: string;
  promptSetHash?: string;
  created?: string;
  recommendedLayer?: number;
  /** Model diffing: the fine-tune's mean residual minus the base's (`model`) over `prompts` neutral prompts. */
  diff?: { base: { id: string; revision?: string }; fineTune: { id: string; revision?: string }; prompts: number };
  /** How the steerability scores were measured, or why they could not be. */
  steerability?: { strength: number; unsteeredPerplexity?: number; milliseconds?: number; problem?: string };
  directions: VectorDirection[];
}

export class VectorFileError extends Error {}

export function vectorFileFromExtraction(
  extraction: Extraction,
  model: { id: string; revision?: string; hiddenSize: number },
  preset?: string,
): VectorFile {
  const scores = extraction.steerability;
  return {
    format: 'tiller.vector',
    version: 1,
    model: { id: model.id, revision: model.revision },
    hiddenSize: model.hiddenSize,
    method: extraction.method,
    mode: extraction.mode,
    preset,
    promptSetHash: extraction.promptSetHash,
    created: new Date().toISOString(),
    recommendedLayer: extraction.recommendedLayer,
    steerability: scores && {
      strength: scores.strength,
      unsteeredPerplexity: Number.isFinite(scores.unsteeredPerplexity) ? scores.unsteeredPerplexity : undefined,
      milliseconds: scores.milliseconds,
      problem: scores.problem,
    },
    directions: extraction.layers.map(({ layer, direction, norm, meanResidualNorm, auroc, separation, projections }) => {
      const scored = scores?.layers.find((l) => l.layer === layer);
      return {
        layer, vector: direction, norm, meanResidualNorm, auroc, separation, projections,
        steerability: scored?.steerability,
        perplexityRatio: scored && Math.max(scored.perplexityRatio.positive, scored.perplexityRatio.negative),
        coherentStrength: extraction.coherent?.layer === layer ? extraction.coherent.strength : undefined,
      };
    }),
  };
}

/** A llama.cpp control vector as a vector file. GGUF names only an architecture ("llama"), not the model, so
 *  the file is attributed to the model it is loaded into; its hidden size is still checked. */
export function vectorFileFromControlVector(vector: ControlVector, model: { id: string }): VectorFile {
  return {
    format: 'tiller.vector',
    version: 1,
    model: { id: model.id },
    hiddenSize: vector.directions[0].vector.length,
    method: 'gguf',
    directions: vector.directions.map(({ layer, vector: values }) => ({
      layer, vector: values, norm: vectorLength(values),
    })),
  };
}

export function serializeVectorFile(file: VectorFile): string {
  return JSON.stringify({ ...file, directions: file.directions.map((d) => ({ ...d, vector: Array.from(d.vector) })) }, null, 1);
}

export function parseVectorFile(text: string, fileName = 'vector file'): VectorFile {
  let data: unknown;
  try {
    // A byte-order mark (some Windows editors write one) is not JSON, but it is no reason to refuse a file either.
    data = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (error) {
    throw new VectorFileError(`${fileName} is not JSON (${(error as Error).message})`);
  }
  const fail = (field: string, expected: string): never => {
    throw new VectorFileError(`${fileName}: field "${field}" ${expected}`);
  };
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(data)) return fail('(root)', 'must be an object');
  const optional = <T>(field: string, check: (v: unknown) => boolean, expected: string): T | undefined => {
    const value = data[field];
    if (value === undefined) return undefined;
    if (!check(value)) fail(field, expected);
    return value as T;
  };
  const isNumber = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  const isString = (v: unknown) => typeof v === 'string';

  if (data.format !== 'tiller.vector') fail('format', 'must be "tiller.vector"');
  if (data.version !== 1) fail('version', `must be 1 (this file says ${JSON.stringify(data.version)})`);
  const model = data.model;
  if (!isObject(model) || typeof model.id !== 'string' || model.id === '') fail('model.id', 'must name the model the vector was made for');
  const { id, revision } = model as { id: string; revision?: unknown };
  if (revision !== undefined && typeof revision !== 'string') fail('model.revision', 'must be a string');
  const hiddenSize = data.hiddenSize;
  if (!Number.isInteger(hiddenSize) || (hiddenSize as number) <= 0) fail('hiddenSize', 'must be a positive integer');
  if (!Array.isArray(data.directions) || data.directions.length === 0) fail('directions', 'must be a non-empty list');

  const layersSeen = new Set<number>();
  const directions = (data.directions as unknown[]).map((entry, index): VectorDirection => {
    const at = (field: string) => `directions[${index}].${field}`;
    if (!isObject(entry)) return fail(`directions[${index}]`, 'must be an object');
    const layer = entry.layer;
    if (!Number.isInteger(layer) || (layer as number) < 0) fail(at('layer'), 'must be a layer index ≥ 0');
    if (layersSeen.has(layer as number)) fail(at('layer'), `repeats layer ${layer}`);
    layersSeen.add(layer as number);
    const values = entry.vector;
    if (!Array.isArray(values) || values.length !== hiddenSize || !values.every(isNumber)) {
      fail(at('vector'), `must hold ${hiddenSize} finite numbers (hiddenSize)`);
    }
    const vector = Float32Array.from(values as number[]);
    const number = (field: string, positive: boolean) => {
      const value = entry[field];
      if (value === undefined) return undefined;
      if (!isNumber(value) || (positive && (value as number) <= 0)) fail(at(field), positive ? 'must be a positive number' : 'must be a number');
      return value as number;
    };
    const optionalStrength = (value: unknown, field: string) => {
      if (value === undefined) return undefined;
      if (!isNumber(value) || (value as number) < 0 || (value as number) > 1) fail(field, 'must be a relative strength from 0 to 1');
      return value as number;
    };
    const projections = entry.projections;
    if (projections !== undefined) {
      const lists = ['positive', 'negative', 'heldOutPositive', 'heldOutNegative'];
      const valid = isObject(projections) && lists.every((list) => Array.isArray(projections[list]) && (projections[list] as unknown[]).every(isNumber));
      if (!valid) fail(at('projections'), `must be an object of number lists (${lists.join(', ')})`);
    }
    return {
      layer: layer as number,
      vector,
      norm: number('norm', false) ?? vectorLength(vector),
      meanResidualNorm: number('meanResidualNorm', true),
      auroc: number('auroc', false),
      separation: number('separation', false),
      projections: projections as ExampleProjections | undefined,
      steerability: number('steerability', false),
      perplexityRatio: number('perplexityRatio', true),
      coherentStrength: optionalStrength(entry.coherentStrength, at('coherentStrength')),
    };
  });
  const diff = optional<VectorFile['diff']>('diff', (v) => {
    const named = (m: unknown) => isObject(m) && typeof m.id === 'string' && m.id !== '' && (m.revision === undefined || isString(m.revision));
    return isObject(v) && named(v.base) && named(v.fineTune) && Number.isInteger(v.prompts);
  }, 'must name the base and the fine-tune ({ base: { id }, fineTune: { id }, prompts })');
  const steerability = optional<VectorFile['steerability']>('steerability', (v) => isObject(v) && isNumber(v.strength)
    && ['unsteeredPerplexity', 'milliseconds'].every((field) => v[field] === undefined || isNumber(v[field]))
    && (v.problem === undefined || isString(v.problem)), 'must be an object with a numeric "strength" (and optional unsteeredPerplexity, milliseconds, problem)');
  const recommendedLayer = optional<number>('recommendedLayer', (v) => Number.isInteger(v) && layersSeen.has(v as number), 'must be one of the layers in "directions"');
  return {
    format: 'tiller.vector',
    version: 1,
    model: { id, revision: revision as string | undefined },
    hiddenSize: hiddenSize as number,
    method: optional('method', (v) => v === 'mean' || v === 'pca' || v === 'gguf', 'must be "mean", "pca" or "gguf"'),
    mode: optional('mode', (v) => v === 'last' || v === 'mean' || v === 'answer', 'must be "last", "mean" or "answer"'),
    preset: optional('preset', isString, 'must be a string'),
    promptSetHash: optional('promptSetHash', isString, 'must be a string'),
    created: optional('created', isString, 'must be a date string'),
    recommendedLayer,
    diff,
    steerability: steerability && {
      strength: steerability.strength, unsteeredPerplexity: steerability.unsteeredPerplexity, milliseconds: steerability.milliseconds, problem: steerability.problem,
    },
    directions,
  };
}

/** Refuses a vector made for another model, or another shape of model. */
export function assertVectorFits(file: VectorFile, model: { id: string; hiddenSize: number; layerCount: number }): void {
  if (file.hiddenSize !== model.hiddenSize) {
    throw new VectorFileError(
      `this vector was made for ${file.model.id} (hidden size ${file.hiddenSize}); ${model.id} has hidden size ${model.hiddenSize}. ` +
        'Compute a direction for this model instead.',
    );
  }
  // A diff direction belongs to both models of its pair: it steers the base and is removed from the fine-tune.
  const madeFor = [file.model.id, ...(file.diff ? [file.diff.fineTune.id] : [])];
  if (!madeFor.some((id) => baseName(id) === baseName(model.id))) {
    throw new VectorFileError(
      `this vector was made for ${file.model.id}, not ${model.id}: directions do not transfer between models. Compute one for ${model.id}.`,
    );
  }
  for (const direction of file.directions) {
    if (direction.layer >= model.layerCount) {
      throw new VectorFileError(`the vector file has a direction for layer ${direction.layer}, but ${model.id} has layers 0–${model.layerCount - 1}`);
    }
  }
}

/** The same model may be known as "owner/name", a folder "name", or a URL ending in it. */
function baseName(id: string): string {
  return id.replace(/\/+$/, '').split('/').pop()!.toLowerCase();
}

/** Per layer both files have, the cosine between their directions (0 where either is zero). */
export function directionCosines(a: VectorFile, b: VectorFile): { layer: number; cosine: number }[] {
  if (a.hiddenSize !== b.hiddenSize) throw new Error(`the two directions have different hidden sizes (${a.hiddenSize} vs ${b.hiddenSize})`);
  return a.directions.flatMap(({ layer, vector }) => {
    const other = b.directions.find((d) => d.layer === layer);
    if (!other) return [];
    const lengths = vectorLength(vector) * vectorLength(other.vector);
    return [{ layer, cosine: lengths > 0 ? dot(vector, other.vector) / lengths : 0 }];
  });
}
