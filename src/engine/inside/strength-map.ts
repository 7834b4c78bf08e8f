/**
 * The layer × strength map: for each layer and strength, a short greedy continuation of one prompt,
 * then the unsteered model reads it back, giving the trait it expresses (the mean projection of its
 * tokens' residuals on a readout direction) and its coherence (the unsteered model's own perplexity of
 * it). The working region is where the trait moves and the perplexity has not yet exploded.
 */
import { dot, vectorLength } from '../vectors.ts';
import { type GenerateRequest, generate, promptTokenIds } from '../generation/generate.ts';
import { type MeterScale, meterValue } from './projection.ts';
import type { SteerableModel } from '../model/steerable-model.ts';
import { scaledDirection } from '../directions/strength.ts';

export interface StrengthMapRequest extends Pick<GenerateRequest, 'prompt' | 'messages' | 'chatContext' | 'promptIds' | 'stopTokenIds' | 'steerPrompt'> {
  /** The direction to add at each mapped layer, and the multiplier that relative strength 1 stands for there. */
  layers: { layer: number; vector: ArrayLike<number>; multiplier: number }[];
  /** Relative strengths, e.g. −1 … 1. */
  strengths: number[];
  /** Where the trait is read: the unsteered residual at this layer on this direction, in meter units when `scale` is given. */
  readout: { layer: number; direction: ArrayLike<number>; scale?: MeterScale };
  /** Tokens per continuation (default 24). */
  maxNewTokens?: number;
}

export interface StrengthMapCell {
  layer: number;
  strength: number;
  text: string;
  tokenCount: number;
  /** Mean projection of the continuation's residuals at the readout layer (meter units with a scale). */
  trait: number;
  /** exp(mean negative log-likelihood) of the continuation under the unsteered model: low is coherent. */
  perplexity: number;
}

export interface StrengthMapControls {
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

export async function strengthMap(model: SteerableModel, request: StrengthMapRequest, controls: StrengthMapControls = {}): Promise<StrengthMapCell[]> {
  const promptIds = promptTokenIds(model, request);
  const readoutLength = vectorLength(request.readout.direction);
  if (!(readoutLength > 0)) throw new Error('the readout direction has zero length');
  const readoutUnit = Float32Array.from(request.readout.direction, (v) => v / readoutLength);
  const total = request.layers.length * request.strengths.length;
  const cells: StrengthMapCell[] = [];
  for (const { layer, vector, multiplier } of request.layers) {
    // All strengths of one layer decode side by side, as rows of one batch.
    const generated = await generate(model, {
      promptIds,
      maxNewTokens: request.maxNewTokens ?? 24,
      sampling: { temperature: 0 },
      rows: request.strengths.map((strength) => (strength === 0 ? [] : [{ layer, vector: scaledDirection(vector, strength * multiplier) }])),
      steerPrompt: request.steerPrompt,
      stopTokenIds: request.stopTokenIds,
    }, { signal: controls.signal });
    for (const [index, row] of generated.rows.entries()) {
      if (controls.signal?.aborted) throw new DOMException('the map was cancelled', 'AbortError');
      const reading = await readBack(model, generated.promptIds, row.tokenIds, request.readout.layer, readoutUnit);
      cells.push({
        layer,
        strength: request.strengths[index],
        text: row.text,
        tokenCount: row.tokenIds.length,
        trait: meterValue(reading.projection, request.readout.scale),
        perplexity: reading.perplexity,
      });
      controls.onProgress?.(cells.length, total);
    }
  }
  return cells;
}

/** The unsteered model reads prompt + continuation: mean readout projection and perplexity of the continuation. */
async function readBack(model: SteerableModel, promptIds: number[], continuation: number[], layer: number, unit: Float32Array) {
  if (continuation.length === 0) return { projection: NaN, perplexity: NaN };
  const tokens = [...promptIds, ...continuation];
  const { logits, hidden } = await model.forward({ tokens: [tokens], logits: 'all', hiddenLayers: [layer] });
  const vocab = logits!.length / tokens.length;
  const residuals = hidden.get(layer)!;
  const width = unit.length;
  let negativeLogLikelihood = 0;
  let projection = 0;
  for (let i = 0; i < continuation.length; i++) {
    const position = promptIds.length + i;
    // Token `position` was predicted at position − 1.
    const row = logits!.subarray((position - 1) * vocab, position * vocab);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    negativeLogLikelihood += Math.log(sum) + max - row[tokens[position]];
    projection += dot(residuals.subarray(position * width, (position + 1) * width), unit);
  }
  return { projection: projection / continuation.length, perplexity: Math.exp(negativeLogLikelihood / continuation.length) };
}
