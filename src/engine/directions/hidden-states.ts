/**
 * Residual-stream capture: for a list of prompts, the residual after chosen layers, reduced to the
 * last token or the mean over tokens (optionally over a token range, e.g. only answer tokens).
 * Prompts are sorted by length and batched, shorter ones padded on the right: in a causal decoder no
 * position sees the ones after it, so padding changes nothing that is read (except where the graph
 * couples rows and positions, q8: there each prompt runs alone). Padding still costs a full token's
 * compute, and on a CPU a batch saves less than that (prompts 8–24 tokens long in batches of 16 ran
 * 0.74–0.88× as fast as one at a time), so a batch only takes prompts of nearly its length.
 */
import type { SteerableModel, SteeringRow } from '../model/steerable-model.ts';
import { yieldToEventLoop } from '../generation/yield.ts';

export type Reduction = 'last' | 'mean';

export interface CaptureRequest {
  /** Token ids per prompt (tokenise first, so callers control BOS and chat templates). */
  prompts: number[][];
  layers: number[];
  reduce: Reduction;
  /** Per prompt, the token range [start, end) to average over (mean only); default all tokens. */
  ranges?: ([number, number] | undefined)[];
  /** Added to every prompt's residual while capturing. */
  steering?: SteeringRow;
  /** Most prompts in one forward pass (default 16). */
  batchSize?: number;
}

/** Padding a batch may carry, as a share of its real tokens. */
const PADDING_SHARE = 1 / 16;

/** Prompt indices, sorted by length and cut into batches of at most `batchSize` whose padding (every
 *  row as long as the last, longest one) stays within PADDING_SHARE of their tokens. */
export function batchesByLength(lengths: number[], batchSize: number): number[][] {
  const order = lengths.map((_, index) => index).sort((a, b) => lengths[a] - lengths[b]);
  const batches: number[][] = [];
  let tokens = 0;
  for (const index of order) {
    const batch = batches.at(-1);
    const width = lengths[index];
    if (batch && batch.length < batchSize && (batch.length + 1) * width - (tokens + width) <= PADDING_SHARE * (tokens + width)) {
      batch.push(index);
      tokens += width;
    } else {
      batches.push([index]);
      tokens = width;
    }
  }
  return batches;
}

export interface CaptureControls {
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

/** `vectors[prompt][i]` is the reduced residual at `layers[i]`, `hiddenSize` floats; `tokenNorms[prompt][i]`
 *  the mean length of the individual token residuals that went into it (the scale steering strengths use). */
export interface CaptureResult {
  layers: number[];
  hiddenSize: number;
  vectors: Float32Array[][];
  tokenNorms: number[][];
}

export async function captureHiddenStates(model: SteerableModel, request: CaptureRequest, controls: CaptureControls = {}): Promise<CaptureResult> {
  const hidden = model.analysis.hiddenSize;
  // Where rows interact (one quantisation scale over the whole tensor) the positions of a row do too:
  // padding would change the real tokens' residuals, so each prompt runs alone and unpadded.
  const batchSize = model.analysis.rowsCoupled ? 1 : Math.max(1, request.batchSize ?? 16);
  const { prompts, layers } = request;
  prompts.forEach((ids, index) => {
    if (ids.length === 0) throw new Error(`prompt ${index} has no tokens`);
    const range = request.ranges?.[index];
    if (range && !(range[0] >= 0 && range[0] < range[1] && range[1] <= ids.length)) {
      throw new Error(`prompt ${index}: token range [${range[0]}, ${range[1]}) is outside its ${ids.length} tokens`);
    }
  });

  if (layers.length === 0) throw new Error('capture needs at least one layer');
  const vectors: Float32Array[][] = prompts.map(() => []);
  const tokenNorms: number[][] = prompts.map(() => []);
  let done = 0;
  for (const members of batchesByLength(prompts.map((ids) => ids.length), batchSize)) {
    await yieldToEventLoop();
    if (controls.signal?.aborted) throw new DOMException('hidden-state capture was cancelled', 'AbortError');
    const width = prompts[members[members.length - 1]].length;
    const result = await model.forward({
      tokens: members.map((index) => [...prompts[index], ...new Array(width - prompts[index].length).fill(prompts[index].at(-1))]),
      steering: request.steering && members.map(() => request.steering!),
      logits: 'none',
      hiddenLayers: layers,
    });
    members.forEach((promptIndex, row) => {
      const length = prompts[promptIndex].length;
      const [start, end] = request.reduce === 'last' ? [length - 1, length] : request.ranges?.[promptIndex] ?? [0, length];
      layers.forEach((layer, layerIndex) => {
        const states = result.hidden.get(layer)!;
        const sum = new Float32Array(hidden);
        let normSum = 0;
        for (let position = start; position < end; position++) {
          const offset = (row * width + position) * hidden;
          let squares = 0;
          for (let i = 0; i < hidden; i++) {
            sum[i] += states[offset + i];
            squares += states[offset + i] ** 2;
          }
          normSum += Math.sqrt(squares);
        }
        for (let i = 0; i < hidden; i++) sum[i] /= end - start;
        vectors[promptIndex][layerIndex] = sum;
        tokenNorms[promptIndex][layerIndex] = normSum / (end - start);
      });
    });
    done += members.length;
    controls.onProgress?.(done, prompts.length);
  }
  return { layers, hiddenSize: hidden, vectors, tokenNorms };
}
