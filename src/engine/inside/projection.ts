/**
 * The persona meter: how far each token's residual at one layer reaches along a direction ("is the
 * persona active right now?"). On generated text, read under the steering it was generated with; on any
 * pasted text, read by the unsteered model, as a detector.
 */
import { dot, vectorLength } from '../vectors.ts';
import type { ExampleProjections } from '../directions/directions.ts';
import type { SteerableModel, SteeringRow } from '../model/steerable-model.ts';
import { TokenTextStream } from '../model/text-stream.ts';

export interface ProjectionRequest {
  /** Tokens read first and not measured (e.g. a generation's prompt). */
  contextIds?: number[];
  /** The tokens measured, one projection each. */
  tokenIds: number[];
  layer: number;
  direction: ArrayLike<number>;
  /** The steering the text was generated under (default none). */
  steering?: SteeringRow;
  /** Whether the context was steered too (default true), as with generate's steerPrompt. */
  steerContext?: boolean;
  /** Project the residual minus what the steering added at this layer: the model's own state, not our input
   *  (the measured tokens are always steered, so the added vectors' component comes off every one). */
  withoutAdded?: boolean;
}

export interface TokenProjection {
  id: number;
  /** Text this token adds ('' while a multi-byte character is incomplete), as the generation streamed it. */
  text: string;
  /** Residual after the layer, at this token's position, projected on the unit direction. */
  projection: number;
}

export async function tokenProjections(model: SteerableModel, request: ProjectionRequest): Promise<TokenProjection[]> {
  const { tokenIds, layer } = request;
  const contextIds = request.contextIds ?? [];
  if (tokenIds.length === 0) return [];
  if (contextIds.length + tokenIds.length > model.contextLength) {
    throw new Error(`the text is ${contextIds.length + tokenIds.length} tokens; ${model.id} reads at most ${model.contextLength}: shorten it`);
  }
  const length = vectorLength(request.direction);
  if (!(length > 0)) throw new Error('the direction has zero length: nothing to project on');
  const unit = Float32Array.from(request.direction, (v) => v / length);
  const steering = request.steering && request.steering.length > 0 ? [request.steering] : undefined;

  let hidden: Float32Array;
  if (contextIds.length > 0 && steering && request.steerContext === false) {
    // The context unsteered, then the measured tokens steered: exactly how generate ran them.
    const context = await model.forward({ tokens: [contextIds], logits: 'none', keepCache: true });
    hidden = (await model.forward({ tokens: [tokenIds], past: context.cache, steering, logits: 'none', hiddenLayers: [layer] })).hidden.get(layer)!;
  } else {
    const all = await model.forward({ tokens: [[...contextIds, ...tokenIds]], steering, logits: 'none', hiddenLayers: [layer] });
    hidden = all.hidden.get(layer)!.subarray(contextIds.length * unit.length);
  }
  const added = request.withoutAdded
    ? (request.steering ?? []).filter((op) => op.layer === layer && (op.operation ?? 'add') === 'add').reduce((sum, op) => sum + dot(op.vector, unit), 0)
    : 0;
  const decode = (ids: number[]) => model.tokenizer?.decode(ids, { skipSpecialTokens: true }) ?? ids.join(' ');
  const stream = new TokenTextStream(decode);
  const tokens = tokenIds.map((id, i) => ({
    id,
    text: stream.push(id),
    projection: dot(hidden.subarray(i * unit.length, (i + 1) * unit.length), unit) - added,
  }));
  tokens[tokens.length - 1].text += stream.flush(); // an incomplete character at the end, as generate shows it
  return tokens;
}

/** A text as the unsteered model reads it: a leading BOS is read but not measured (its residual is an
 *  outlier in every model). */
export function textProjections(model: SteerableModel, request: Omit<ProjectionRequest, 'tokenIds' | 'contextIds'> & { text: string }): Promise<TokenProjection[]> {
  if (!model.tokenizer) throw new Error(`${model.id} has no tokenizer: cannot read a text`);
  const ids = model.tokenizer.encode(request.text);
  const context = ids.length > 1 && ids[0] === model.tokenizer.bosTokenId ? 1 : 0;
  return tokenProjections(model, { ...request, contextIds: ids.slice(0, context), tokenIds: ids.slice(context) });
}

/** Where the contrastive examples sat on the direction: the meter's two reference points. */
export interface MeterScale {
  negativeMean: number;
  positiveMean: number;
}

export function meterScaleOf(projections: ExampleProjections): MeterScale {
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  return { negativeMean: mean(projections.negative), positiveMean: mean(projections.positive) };
}

/** A projection in meter units: −1 where the negative examples sat on average, +1 the positive ones, 0 midway;
 *  the raw projection where there is no scale (a direction imported without its examples). */
export function meterValue(projection: number, scale: MeterScale | undefined): number {
  if (!scale) return projection;
  const middle = (scale.positiveMean + scale.negativeMean) / 2;
  const half = (scale.positiveMean - scale.negativeMean) / 2;
  return half === 0 ? 0 : (projection - middle) / half;
}
