/**
 * The logit lens of a direction: what the model would say if its last residual pointed along the
 * direction. The direction goes through the model's own final norm and LM head (whatever their dtype or
 * quantisation): a steering vector at the last layer of `d − h` turns that layer's residual h into d.
 * Half the difference between +d and −d cancels the norm's bias and any LM-head bias, leaving
 * LMHead(γ ⊙ norm(d)): the tokens the direction raises most, and lowers most.
 */
import { vectorLength } from '../vectors.ts';
import { bestTokens } from '../generation/sampling.ts';
import type { SteerableModel } from '../model/steerable-model.ts';

export interface LensToken {
  id: number;
  /** The raw vocabulary piece (e.g. "▁happy"). */
  piece: string;
  /** Change of this token's logit, per unit of the normalised direction. */
  effect: number;
}

export interface LogitLens {
  raised: LensToken[];
  lowered: LensToken[];
}

/** Every token's logit effect (length vocab). */
export async function directionLogitEffects(model: SteerableModel, direction: ArrayLike<number>): Promise<Float32Array> {
  const length = vectorLength(direction);
  if (!(length > 0)) throw new Error('the direction has zero length: it raises and lowers nothing');
  const last = model.analysis.layerCount - 1;
  const hidden = model.analysis.hiddenSize;
  // Scaled to a root-mean-square of 1, where norms behave as they do on real residuals (the norm's ε is negligible).
  const scale = Math.sqrt(hidden) / length;
  const token = [model.tokenizer?.bosTokenId ?? 0];
  const residual = (await model.forward({ tokens: [token], logits: 'none', hiddenLayers: [last] })).hidden.get(last)!;
  const replacing = (sign: number) => [{ layer: last, vector: Float32Array.from({ length: hidden }, (_, i) => sign * scale * direction[i] - residual[i]) }];
  const { logits } = await model.forward({ tokens: [token, token], steering: [replacing(1), replacing(-1)], logits: 'last' });
  const vocab = logits!.length / 2;
  return Float32Array.from({ length: vocab }, (_, i) => (logits![i] - logits![vocab + i]) / 2);
}

export async function directionLogitLens(model: SteerableModel, direction: ArrayLike<number>, top = 12): Promise<LogitLens> {
  const effects = await directionLogitEffects(model, direction);
  const count = Math.min(top, effects.length);
  const entry = (id: number): LensToken => ({ id, piece: model.tokenizer?.tokenText(id) ?? String(id), effect: effects[id] });
  return {
    raised: Array.from(bestTokens(effects, count), entry),
    lowered: Array.from(bestTokens(effects.map((v) => -v), count), entry),
  };
}
