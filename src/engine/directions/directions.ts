/**
 * Persona directions from contrastive examples, at every layer, with the evidence for choosing one:
 * the direction (difference of means, or the first principal component of paired differences), its
 * length, the layer's typical residual length, and how well it separates examples held out from fitting.
 */
import type { CaptureResult } from './hidden-states.ts';
import { dot, vectorLength } from '../vectors.ts';

export type DirectionMethod = 'mean' | 'pca';

export interface LayerDirection {
  layer: number;
  /** Positive minus negative: the raw vector steering adds (times the strength multiplier). */
  direction: Float32Array;
  /** ‖direction‖. */
  norm: number;
  /** Mean length of a single token's residual at this layer: the unit of relative strength. */
  meanResidualNorm: number;
  /** Held-out AUROC of the projection onto the direction: 0.5 is chance, 1 perfect. */
  auroc: number;
  /** Held-out separation d′: gap between the classes' mean projections over their pooled spread. */
  separation: number;
  /** Each example's projection on the unit direction, in example order: fitted on all examples, and
   *  held out (on the direction fitted without the example's fold). What the separation plot shows. */
  projections: ExampleProjections;
}

export interface ExampleProjections {
  positive: number[];
  negative: number[];
  heldOutPositive: number[];
  heldOutNegative: number[];
}

export interface DirectionSet {
  method: DirectionMethod;
  layers: LayerDirection[];
  recommendedLayer: number;
  /** Examples per side, and how many folds each was held out in. */
  positiveCount: number;
  negativeCount: number;
  folds: number;
}

export interface FitOptions {
  method?: DirectionMethod;
  /** Cross-validation folds for the held-out scores (default 4, fewer when examples are few). */
  folds?: number;
}

/**
 * `positive` and `negative` are captures of the same layers; with `method: 'pca'` they must be paired
 * (same length, example i of each side differing mainly in the trait).
 */
export function fitDirections(positive: CaptureResult, negative: CaptureResult, options: FitOptions = {}): DirectionSet {
  const method = options.method ?? 'mean';
  const positiveCount = positive.vectors.length;
  const negativeCount = negative.vectors.length;
  if (positiveCount < 2 || negativeCount < 2) {
    throw new Error(`need at least 2 examples per side to fit and score a direction (got ${positiveCount} positive, ${negativeCount} negative)`);
  }
  if (method === 'pca' && positiveCount !== negativeCount) {
    throw new Error(`PCA of paired differences needs pairs: ${positiveCount} positive vs ${negativeCount} negative examples`);
  }
  const folds = Math.max(2, Math.min(options.folds ?? 4, positiveCount, negativeCount));

  const layers = positive.layers.map((layer, index): LayerDirection => {
    const pos = positive.vectors.map((v) => v[index]);
    const neg = negative.vectors.map((v) => v[index]);
    const direction = fit(method, pos, neg);

    // Every example is held out once: project it on a direction fitted without it.
    const heldOutPos = new Array<number>(pos.length);
    const heldOutNeg = new Array<number>(neg.length);
    for (let fold = 0; fold < folds; fold++) {
      const inFold = (i: number) => i % folds === fold;
      const unit = normalise(fit(method, pos.filter((_, i) => !inFold(i)), neg.filter((_, i) => !inFold(i))));
      pos.forEach((v, i) => inFold(i) && (heldOutPos[i] = dot(v, unit)));
      neg.forEach((v, i) => inFold(i) && (heldOutNeg[i] = dot(v, unit)));
    }
    const unit = normalise(direction);
    const norms = [...positive.tokenNorms, ...negative.tokenNorms].map((n) => n[index]);
    return {
      layer,
      direction,
      norm: vectorLength(direction),
      meanResidualNorm: norms.reduce((a, b) => a + b, 0) / norms.length,
      auroc: auroc(heldOutPos, heldOutNeg),
      separation: dPrime(heldOutPos, heldOutNeg),
      projections: {
        positive: pos.map((v) => dot(v, unit)),
        negative: neg.map((v) => dot(v, unit)),
        heldOutPositive: heldOutPos,
        heldOutNegative: heldOutNeg,
      },
    };
  });
  return { method, layers, recommendedLayer: recommendLayer(layers), positiveCount, negativeCount, folds };
}

function fit(method: DirectionMethod, pos: Float32Array[], neg: Float32Array[]): Float32Array {
  const difference = subtract(mean(pos), mean(neg));
  if (method === 'mean') return difference;
  // First principal component of the paired differences (uncentred, so the shared shift counts), its sign
  // fixed so positives project higher, scaled to the gap between the class means along it.
  const unit = principalDirection(pos.map((p, i) => subtract(p, neg[i])));
  const gap = dot(difference, unit);
  return unit.map((v) => v * gap);
}

/**
 * The layer to steer. With steerability scores (what steering there does to the examples), the most
 * steerable scored layer; without them, the best held-out separation (late layers separate best but often
 * barely steer). Either way, among layers within 10 % of the best, the one nearest the middle of the stack.
 */
export function recommendLayer(
  layers: Pick<LayerDirection, 'layer' | 'separation'>[],
  steerability?: { layer: number; steerability: number }[],
): number {
  const candidates = steerability && steerability.length > 0
    ? steerability.map((l) => ({ layer: l.layer, score: l.steerability }))
    : layers.map((l) => ({ layer: l.layer, score: l.separation }));
  const best = Math.max(...candidates.map((l) => l.score));
  const middle = (layers.length - 1) / 2;
  const nearTies = candidates.filter((l) => l.score >= best - 0.1 * Math.abs(best));
  nearTies.sort((a, b) => Math.abs(a.layer - middle) - Math.abs(b.layer - middle) || b.score - a.score);
  return nearTies[0].layer;
}

/** Top eigenvector of DᵀD via the small n×n Gram matrix DDᵀ (n examples ≪ hidden size). */
function principalDirection(rows: Float32Array[]): Float32Array {
  const n = rows.length;
  const gram = rows.map((a) => rows.map((b) => dot(a, b)));
  let weights = new Array(n).fill(1 / Math.sqrt(n));
  for (let iteration = 0; iteration < 200; iteration++) {
    const next = gram.map((row) => row.reduce((sum, g, j) => sum + g * weights[j], 0));
    const length = Math.sqrt(next.reduce((sum, v) => sum + v * v, 0)) || 1;
    const converged = next.every((v, i) => Math.abs(v / length - weights[i]) < 1e-9);
    weights = next.map((v) => v / length);
    if (converged) break;
  }
  const direction = new Float32Array(rows[0].length);
  rows.forEach((row, i) => row.forEach((v, k) => (direction[k] += weights[i] * v)));
  return normalise(direction);
}

/** Mann–Whitney AUROC: the chance a held-out positive projects above a held-out negative (ties count half). */
export function auroc(positive: number[], negative: number[]): number {
  let wins = 0;
  for (const p of positive) for (const n of negative) wins += p > n ? 1 : p === n ? 0.5 : 0;
  return wins / (positive.length * negative.length);
}

function dPrime(positive: number[], negative: number[]): number {
  const meanOf = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const varianceOf = (xs: number[], m: number) => xs.reduce((a, b) => a + (b - m) ** 2, 0) / Math.max(1, xs.length - 1);
  const mp = meanOf(positive);
  const mn = meanOf(negative);
  const pooled = Math.sqrt((varianceOf(positive, mp) + varianceOf(negative, mn)) / 2);
  return (mp - mn) / (pooled || 1e-12);
}

function mean(vectors: Float32Array[]): Float32Array {
  const out = new Float32Array(vectors[0].length);
  for (const v of vectors) for (let i = 0; i < v.length; i++) out[i] += v[i] / vectors.length;
  return out;
}

function subtract(a: Float32Array, b: Float32Array): Float32Array {
  return a.map((v, i) => v - b[i]);
}

function normalise(v: Float32Array): Float32Array {
  const length = vectorLength(v) || 1;
  return v.map((x) => x / length);
}
