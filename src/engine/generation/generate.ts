/**
 * The generation loop: every batch row shares one prompt and carries its own steering, so several
 * strengths decode side by side for little more than the cost of one. Prefill, then one token per
 * step with the KV cache fed back; tokens stream as they are decoded. Rows may also have prompts of
 * their own (many questions answered at once): shorter ones are padded on the left and masked.
 */
import { type SamplingOptions, chooseToken, createRng } from './sampling.ts';
import type { SteerableModel, SteeringRow } from '../model/steerable-model.ts';
import { TokenTextStream } from '../model/text-stream.ts';
import { yieldToEventLoop } from './yield.ts';
import type { ChatMessage } from '../model/tokenizer.ts';

export interface GenerateRequest {
  /** Raw prompt, used as is (the tokenizer adds BOS where it always does). */
  prompt?: string;
  /** Chat messages, rendered with the tokenizer's chat template (generation prompt added). */
  messages?: ChatMessage[];
  /** Extra chat template variables, e.g. `{ enable_thinking: false }`. */
  chatContext?: Record<string, unknown>;
  /** Token ids instead of text. */
  promptIds?: number[];
  /** A prompt of its own per row (token ids), instead of one shared prompt; `rows` then defaults to one
   *  unsteered row per prompt. Prompts of different lengths need a graph that honours the attention
   *  mask (SteerableModel.canPadLeft). */
  rowPromptIds?: number[][];
  maxNewTokens?: number;
  sampling?: SamplingOptions;
  /** One entry per batch row (default: one unsteered row). */
  rows?: SteeringRow[];
  /** Steer the prompt's positions too (default), or only the generated ones. */
  steerPrompt?: boolean;
  /** Give each row its own random stream (seed + row), for several samples of one prompt; by default every
   *  row draws the same stream, so rows differ only by their steering. */
  seedPerRow?: boolean;
  /** Each row's seed, overriding both of the above (so a row draws the same stream in any batch). */
  rowSeeds?: number[];
  /** Tokens that end a row besides the model's EOS (llama2.c models end stories with BOS, for one). */
  stopTokenIds?: number[];
}

export interface TokenEvent {
  row: number;
  tokenId: number;
  /** Text that became final with this token ('' while a multi-byte character is incomplete). */
  text: string;
  step: number;
}

/** 'stop': an end token (EOS or a stop token); 'length': max tokens; 'cancelled': aborted. */
export type FinishReason = 'stop' | 'length' | 'cancelled';

export interface GeneratedRow {
  tokenIds: number[];
  text: string;
  finishReason: FinishReason;
}

export interface GenerateResult {
  rows: GeneratedRow[];
  /** The prompt as decoded (row 0's, with rowPromptIds). */
  promptIds: number[];
  /** Prompt tokens dropped from the start to fit the context window (the most of any row). */
  truncatedPromptTokens: number;
  prefillMs: number;
  decodeMs: number;
  /** Decoding steps (one token per row each) per second, prefill excluded. */
  tokensPerSecond: number;
}

export interface GenerateControls {
  onToken?: (event: TokenEvent) => void;
  /** Checked before every step: generation stops within one step of an abort. */
  signal?: AbortSignal;
}

export class NonFiniteLogitsError extends Error {}

export function promptTokenIds(model: SteerableModel, request: GenerateRequest): number[] {
  if (request.promptIds) return request.promptIds;
  const tokenizer = model.tokenizer;
  if (!tokenizer) throw new Error(`${model.id} has no tokenizer.json: pass token ids instead of text`);
  if (request.messages) {
    const text = tokenizer.applyChatTemplate(request.messages, { addGenerationPrompt: true, extraContext: request.chatContext });
    // The template writes the special tokens itself.
    return tokenizer.encode(text, { addSpecialTokens: false });
  }
  return tokenizer.encode(request.prompt ?? '');
}

const STRENGTH_HINT = 'Lower the strength (relative strengths within ±1, a vector no longer than a typical residual, are safe).';

/**
 * Refuses steering whose residual cannot stay finite: the final norm squares the residual, so in float32 a
 * vector longer than about 1.8e19 (in float16, a value beyond 65504) overflows, and the model returns flat
 * logits and empty text instead of an error. Said as NonFiniteLogitsError, like the overflow it causes.
 */
export function checkSteeringMagnitude(model: SteerableModel, rows: SteeringRow[]): void {
  const float16 = model.info.residualDtype === 'float16';
  rows.forEach((row, index) => {
    for (const { layer, vector, operation = 'add' } of row) {
      if (operation !== 'add') continue;
      let squares = 0;
      let largest = 0;
      for (let i = 0; i < vector.length; i++) {
        squares += vector[i] * vector[i];
        largest = Math.max(largest, Math.abs(vector[i]));
      }
      const length = Math.sqrt(squares);
      if (Number.isFinite(length) && length < 1e19 && !(float16 && largest > 65504)) continue;
      throw new NonFiniteLogitsError(`row ${index} steers layer ${layer} with a vector of length ${length.toExponential(2)}, which overflows the model's ` +
        `${float16 ? 'float16' : 'float32'} residual: the steering is too strong for this model. ${STRENGTH_HINT}`);
    }
  });
}

/** A plain loop: `some` with a callback per vocabulary entry showed in profiles of the generation loop. */
function hasNonFinite(values: Float32Array): boolean {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return true;
  return false;
}

export async function generate(model: SteerableModel, request: GenerateRequest, controls: GenerateControls = {}): Promise<GenerateResult> {
  const ownPrompts = request.rowPromptIds;
  if (ownPrompts && ownPrompts.length === 0) throw new Error('rowPromptIds is empty: give one prompt per row');
  const rows = request.rows && request.rows.length > 0 ? request.rows : (ownPrompts ?? [[]]).map(() => []);
  checkSteeringMagnitude(model, rows);
  const batch = rows.length;
  if (ownPrompts && ownPrompts.length !== batch) throw new Error(`${ownPrompts.length} row prompts for ${batch} steering rows: give one per row`);
  const sampling = request.sampling ?? {};
  const steerPrompt = request.steerPrompt ?? true;
  const stop = new Set([...model.eosTokenIds, ...(request.stopTokenIds ?? [])]);

  const requested = request.maxNewTokens ?? 64;
  if (!Number.isInteger(requested) || requested < 1) throw new Error(`maxNewTokens must be a whole number ≥ 1, not ${requested}`);
  // The answer gets at most half the context; older prompt tokens make way for it, but a leading BOS stays.
  const room = model.contextLength;
  const maxNewTokens = Math.min(requested, Math.floor(room / 2));
  let truncatedPromptTokens = 0;
  const fitted = (ids: number[]) => {
    if (ids.length === 0) throw new Error('the prompt is empty and the tokenizer adds no BOS token: give at least one token');
    if (ids.length + maxNewTokens <= room) return ids;
    const cut = ids.length + maxNewTokens - room;
    truncatedPromptTokens = Math.max(truncatedPromptTokens, cut);
    const keepsBos = ids[0] === model.tokenizer?.bosTokenId ? 1 : 0;
    return [...ids.slice(0, keepsBos), ...ids.slice(keepsBos + cut)];
  };
  const prompts = ownPrompts ? ownPrompts.map(fitted) : new Array<number[]>(batch).fill(fitted(promptTokenIds(model, request)));
  const promptIds = prompts[0];
  // Different lengths: pad on the left (with each row's own first token, a real one) so every row's last
  // prompt token is the batch's last position.
  const width = Math.max(...prompts.map((ids) => ids.length));
  const leftPadding = prompts.map((ids) => width - ids.length);
  const padded = prompts.map((ids, row) => [...new Array<number>(leftPadding[row]).fill(ids[0]), ...ids]);
  if (leftPadding.some((pad) => pad > 0) && !(await model.canPadLeft())) {
    throw new Error(`${model.id} cannot decode prompts of different lengths in one batch (its attention ignores where the mask's zeros are): give the rows prompts of one length, or run them one at a time`);
  }

  const decode = (ids: number[]) => model.tokenizer?.decode(ids, { skipSpecialTokens: true }) ?? ids.join(' ');
  const streams = rows.map(() => new TokenTextStream(decode));
  const generated: number[][] = rows.map(() => []);
  const finish: (FinishReason | undefined)[] = rows.map(() => undefined);
  const random = rows.map((_, row) => createRng(request.rowSeeds?.[row] ?? (sampling.seed ?? 0) + (request.seedPerRow ? row : 0)));

  // Answer-only steering: every row's prompt is the same and unsteered, so one row prefills for all.
  const sharedPrefill = !steerPrompt && !ownPrompts && batch > 1;

  const started = performance.now();
  let prefillMs = 0;
  let cache = undefined as Awaited<ReturnType<SteerableModel['forward']>>['cache'];
  let input = padded;
  let decodeSteps = 0;
  try {
    for (let step = 0; step < maxNewTokens; step++) {
      await yieldToEventLoop();
      if (controls.signal?.aborted) {
        finish.forEach((reason, row) => (finish[row] = reason ?? 'cancelled'));
        break;
      }
      const prefillOnce = step === 0 && sharedPrefill;
      const result = await model.forward({
        tokens: prefillOnce ? input.slice(0, 1) : input,
        past: cache,
        leftPadding: step === 0 && leftPadding.some((pad) => pad > 0) ? leftPadding : undefined,
        steering: step === 0 && !steerPrompt ? undefined : rows,
        logits: 'last',
        keepCache: true,
      });
      cache = prefillOnce ? await model.replicateCache(result.cache!, batch) : result.cache;
      if (step === 0) prefillMs = performance.now() - started;
      else decodeSteps++;
      const logits = result.logits!;
      const vocab = logits.length / (prefillOnce ? 1 : batch);
      const next: number[][] = [];
      for (let row = 0; row < batch; row++) {
        const rowLogits = prefillOnce ? logits : logits.subarray(row * vocab, (row + 1) * vocab);
        if (finish[row]) {
          next.push([generated[row].at(-1) ?? prompts[row].at(-1)!]);
          continue;
        }
        if (hasNonFinite(rowLogits)) {
          const steered = rows[row].length > 0 && (steerPrompt || step > 0);
          throw new NonFiniteLogitsError(steered
            ? `row ${row} produced non-finite logits at step ${step}: the steering is too strong for this model. ${STRENGTH_HINT}`
            : `row ${row} produced non-finite logits at step ${step} without steering: the model overflowed` +
                (model.info.residualDtype === 'float16' ? ' in float16; try an fp32 or q4 variant.' : '.'));
        }
        const token = chooseToken(rowLogits, [...prompts[row], ...generated[row]], sampling, random[row]);
        next.push([token]);
        if (stop.has(token)) {
          finish[row] = 'stop';
          continue;
        }
        generated[row].push(token);
        const text = streams[row].push(token);
        controls.onToken?.({ row, tokenId: token, text, step });
        if (generated[row].length >= maxNewTokens) finish[row] = 'length';
      }
      if (finish.every(Boolean)) break;
      input = next;
    }
  } finally {
    model.releaseCache(cache);
  }
  const decodeMs = performance.now() - started - prefillMs;
  for (let row = 0; row < batch; row++) {
    const tail = streams[row].flush();
    if (tail) controls.onToken?.({ row, tokenId: -1, text: tail, step: generated[row].length });
  }
  return {
    rows: generated.map((tokenIds, row) => ({ tokenIds, text: streams[row].text, finishReason: finish[row] ?? 'length' })),
    promptIds,
    truncatedPromptTokens,
    prefillMs,
    decodeMs,
    tokensPerSecond: decodeSteps > 0 ? (decodeSteps * 1000) / decodeMs : 0,
  };
}
