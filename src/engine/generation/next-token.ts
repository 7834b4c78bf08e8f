/**
 * The next-token view: the most likely next tokens after a prompt, with probabilities and logits, for
 * each batch row (e.g. unsteered and steered side by side). The most direct picture of what steering
 * does to the model's choice.
 */
import { type GenerateRequest, checkSteeringMagnitude, promptTokenIds } from './generate.ts';
import { bestTokens } from './sampling.ts';
import type { SteerableModel } from '../model/steerable-model.ts';

export interface NextToken {
  id: number;
  /** The raw vocabulary piece (e.g. "▁happy"), and the text it decodes to. */
  piece: string;
  text: string;
  probability: number;
  logit: number;
}

export type NextTokenRequest = Pick<GenerateRequest, 'prompt' | 'messages' | 'chatContext' | 'promptIds' | 'rows'> & {
  /** How many tokens per row (default 10). */
  top?: number;
};

/** `result[row]`: the top tokens, most likely first. */
export async function nextTokens(model: SteerableModel, request: NextTokenRequest): Promise<NextToken[][]> {
  const promptIds = promptTokenIds(model, request);
  const rows = request.rows && request.rows.length > 0 ? request.rows : [[]];
  checkSteeringMagnitude(model, rows);
  const { logits } = await model.forward({ tokens: rows.map(() => promptIds), steering: rows, logits: 'last' });
  const vocab = logits!.length / rows.length;
  return rows.map((_, row) => topTokens(model, logits!.subarray(row * vocab, (row + 1) * vocab), request.top ?? 10));
}

function topTokens(model: SteerableModel, logits: Float32Array, top: number): NextToken[] {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let total = 0;
  for (const v of logits) total += Math.exp(v - max);
  return Array.from(bestTokens(logits, Math.min(top, logits.length)), (id) => ({
    id,
    piece: model.tokenizer?.tokenText(id) ?? String(id),
    text: model.tokenizer?.decode([id]) ?? String(id),
    probability: Math.exp(logits[id] - max) / total,
    logit: logits[id],
  }));
}
