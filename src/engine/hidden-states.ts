/**
 * Residual-stream capture: for a list of prompts, the residual after chosen layers, reduced to the
 * last token or the mean over tokens (optionally over a token range, e.g. only answer tokens).
 * Prompts of equal length share a batch, so no padding ever changes what a row sees.
 */
import type { SteerableModel, SteeringRow } from './steerable-model.ts';
import { yieldToEventLoop } from './yield.ts';

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
  const batchSize = Math.max(1, request.batchSize ?? 16);
  const { prompts, layers } = request;
  prompts.forEach((ids, index) => {
    if (ids.length === 0) throw new Error(`prompt ${index} has no tokens`);
    const range = request.ranges?.[index];
    if (range && !(range[0] >= 0 && range[0] < range[1] && range[1] <= ids.length)) {
      throw new Error(`prompt ${index}: token range [${range[0]}, ${range[1]}) is outside its ${ids.length} tokens`);
    }
  });

  const byLength = new Map<number, number[]>();
  prompts.forEach((ids, index) => {
    const group = byLength.get(ids.length) ?? [];
    group.push(index);
    byLength.set(ids.length, group);
  });

  const vectors: Float32Array[][] = prompts.map(() => []);
  const tokenNorms: number[][] = prompts.map(() => []);
  let done = 0;
  for (const [length, group] of byLength) {
    for (let first = 0; first < group.length; first += batchSize) {
      await yieldToEventLoop();
      if (controls.signal?.aborted) throw new DOMException('hidden-state capture was cancelled', 'AbortError');
      const members = group.slice(first, first + batchSize);
      const result = await model.forward({
        tokens: members.map((index) => prompts[index]),
        steering: request.steering && members.map(() => request.steering!),
        logits: 'none',
        hiddenLayers: layers,
      });
      members.forEach((promptIndex, row) => {
        const [start, end] = request.reduce === 'last' ? [length - 1, length] : request.ranges?.[promptIndex] ?? [0, length];
        layers.forEach((layer, layerIndex) => {
          const states = result.hidden.get(layer)!;
          const sum = new Float32Array(hidden);
          let normSum = 0;
          for (let position = start; position < end; position++) {
            const offset = (row * length + position) * hidden;
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
  }
  return { layers, hiddenSize: hidden, vectors, tokenNorms };
}
