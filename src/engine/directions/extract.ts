/**
 * From a contrastive set to per-layer directions. Base models: raw texts, residual at the last token or
 * averaged over the text. Chat models (the persona-vectors recipe): the same questions under a system
 * prompt that elicits the trait and one that suppresses it; the model answers (a few sampled answers per
 * question) and the residual is averaged over the answer tokens only.
 */
import { type DirectionMethod, type DirectionSet, fitDirections, recommendLayer } from './directions.ts';
import { generate } from '../generation/generate.ts';
import { type CaptureResult, captureHiddenStates } from './hidden-states.ts';
import type { SteerableModel } from '../model/steerable-model.ts';
import type { ChatMessage } from '../model/tokenizer.ts';
import {
  type CoherentRange, type ScoringExample, type ScoringExamples, type SteerabilityOptions, type SteerabilityResult, coherentRange, measuredCoherence,
  scorable, scoreSteerability,
} from './steerability.ts';

export type ContrastiveSet =
  | { kind: 'texts'; positive: string[]; negative: string[] }
  | { kind: 'persona'; questions: string[]; positiveSystemPrompts: string[]; negativeSystemPrompts: string[] };

/** Which positions' residuals describe an example: its last token, all its tokens, or the model's answer. */
export type ExtractionMode = 'last' | 'mean' | 'answer';

export interface ExtractOptions {
  method?: DirectionMethod;
  mode?: ExtractionMode;
  /** Layers to fit (default all). */
  layers?: number[];
  /** Persona sets in answer mode: sampled answers per question and side (default 2), their length (default 48). */
  answersPerQuestion?: number;
  answerTokens?: number;
  /** Most answers decoded side by side as rows of one batch (default 32). `answersPerQuestion` decodes one
   *  question at a time, as extraction did before answers were batched. */
  answerRows?: number;
  temperature?: number;
  seed?: number;
  batchSize?: number;
  /** The steerability score after fitting (default on, with its defaults); false skips it. */
  steerability?: SteerabilityOptions | false;
}

export type ExtractStage = 'answering' | 'capturing' | 'scoring';

export interface ExtractControls {
  onProgress?: (stage: ExtractStage, done: number, total: number) => void;
  signal?: AbortSignal;
}

export interface Extraction extends DirectionSet {
  mode: ExtractionMode;
  /** SHA-256 of the contrastive set, so a vector file says exactly which prompts made it. */
  promptSetHash: string;
  /** A few of the answers the model gave, per side, for people to read (answer mode). */
  sampleAnswers?: { positive: string[]; negative: string[] };
  /** What steering each layer does to the examples (absent when skipped). */
  steerability?: SteerabilityResult;
  /** The strengths that keep the examples coherent at the recommended layer (absent when unscored). */
  coherent?: CoherentRange;
  /** The examples steering was scored on (token ids), for the coherent range at other layers. */
  scoringExamples?: ScoringExamples;
  /** Cancelled while scoring (the directions were fitted): kept, and recommended by separation or without a
   *  coherent range, as far as the scoring got. */
  scoringCancelled?: boolean;
}

interface Example {
  ids: number[];
  /** Token range [start, end) to average in 'mean' and 'answer' modes. */
  range: [number, number];
}

export async function extractDirections(
  model: SteerableModel,
  set: ContrastiveSet,
  options: ExtractOptions = {},
  controls: ExtractControls = {},
): Promise<Extraction> {
  const tokenizer = model.tokenizer;
  if (!tokenizer) throw new Error(`${model.id} has no tokenizer.json: cannot tokenise the contrastive prompts`);
  const mode = options.mode ?? (set.kind === 'persona' ? 'answer' : 'mean');
  const layers = options.layers ?? model.analysis.layers.map((site) => site.layer);

  let positive: Example[];
  let negative: Example[];
  let scoring: ScoringExamples | string;
  let sampleAnswers: Extraction['sampleAnswers'];
  if (set.kind === 'texts') {
    if (mode === 'answer') throw new Error('answer mode needs a chat (persona) set: raw texts have no answers; use mean or last');
    // A leading BOS is the same in every example and dwarfs the rest: leave it out of the mean.
    const example = (text: string): Example => {
      const ids = tokenizer.encode(text);
      const start = ids[0] === tokenizer.bosTokenId && ids.length > 1 ? 1 : 0;
      return { ids, range: [start, ids.length] };
    };
    positive = set.positive.map(example);
    negative = set.negative.map(example);
    scoring = textScoringExamples(positive.map((e) => e.ids), negative.map((e) => e.ids));
  } else {
    if (!tokenizer.hasChatTemplate) {
      throw new Error(`${model.id} has no chat template, and persona sets ask questions under system prompts: use a chat (instruct) model, or a base-model preset`);
    }
    const conversation = (system: string, question: string): number[] => {
      const messages: ChatMessage[] = [{ role: 'system', content: system }, { role: 'user', content: question }];
      return tokenizer.encode(tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true }), { addSpecialTokens: false });
    };
    const prompts = (systems: string[]) => set.questions.map((question, i) => conversation(systems[i % systems.length], question));
    const positivePrompts = prompts(set.positiveSystemPrompts);
    const negativePrompts = prompts(set.negativeSystemPrompts);
    if (mode === 'answer') {
      const answered = await answerAll(model, positivePrompts, negativePrompts, options, controls);
      [positive, negative, sampleAnswers] = [answered.positive, answered.negative, answered.samples];
      // The answers scored under the bare question: does steering make the model answer like the persona?
      const questions = set.questions.map((question) => tokenizer.encode(
        tokenizer.applyChatTemplate([{ role: 'user', content: question }], { addGenerationPrompt: true }), { addSpecialTokens: false },
      ));
      const answerOf = (e: Example & { question: number }): ScoringExample => ({ context: questions[e.question], continuation: e.ids.slice(e.range[0], Math.min(e.range[1], e.range[0] + SCORED_ANSWER_TOKENS)) });
      scoring = { positive: answered.positive.map(answerOf), negative: answered.negative.map(answerOf) };
    } else {
      const example = (ids: number[]): Example => ({ ids, range: [0, ids.length] });
      positive = positivePrompts.map(example);
      negative = negativePrompts.map(example);
      scoring = 'prompt-only persona directions have no answers to score steering on: use answer mode';
    }
  }

  const total = positive.length + negative.length;
  const capture = async (examples: Example[], offset: number): Promise<CaptureResult> =>
    captureHiddenStates(model, {
      prompts: examples.map((e) => e.ids),
      ranges: examples.map((e) => e.range),
      layers,
      reduce: mode === 'last' ? 'last' : 'mean',
      batchSize: options.batchSize,
    }, { signal: controls.signal, onProgress: (done) => controls.onProgress?.('capturing', offset + done, total) });
  const positiveStates = await capture(positive, 0);
  const negativeStates = await capture(negative, positive.length);
  const fitted = fitDirections(positiveStates, negativeStates, { method: options.method });
  const extraction: Extraction = { ...fitted, mode, promptSetHash: await hashSet(set), sampleAnswers };
  if (options.steerability === false) return extraction;
  if (typeof scoring === 'string') {
    extraction.steerability = { strength: options.steerability?.strength ?? 0.25, layers: [], unsteeredPerplexity: NaN, problem: scoring, milliseconds: 0 };
    return extraction;
  }
  // Persona answers are long and chat vocabularies large: fewer of them keep the pass near the answering's
  // cost. The examples kept are the ones scored, so that later coherent ranges read the same ones.
  scoring = scorable(scoring, options.steerability?.maxExamples ?? (set.kind === 'persona' ? 8 : undefined));
  extraction.scoringExamples = scoring;
  const progress = (done: number, total: number) => controls.onProgress?.('scoring', done, total);
  // Cancel while scoring keeps what is done: on deep models the pass can take longer than the extraction, and
  // the answers and directions are the user's work.
  const cancelled = (error: unknown) => {
    if (!(controls.signal?.aborted && (error as Error)?.name === 'AbortError')) throw error;
    extraction.scoringCancelled = true;
    return undefined;
  };
  const started = performance.now();
  extraction.steerability = await scoreSteerability(model, fitted.layers, scoring, options.steerability, { signal: controls.signal, onProgress: progress })
    .catch(cancelled) ?? {
    strength: options.steerability?.strength ?? 0.25, layers: [], unsteeredPerplexity: NaN, milliseconds: performance.now() - started,
    problem: 'steering was not measured: scoring was cancelled, so the star marks the layer that separates best, which is not always the one that steers best; compute again to measure it',
  };
  if (extraction.steerability.problem) return extraction;
  extraction.recommendedLayer = recommendLayer(fitted.layers, extraction.steerability.layers);
  const recommended = fitted.layers.find((l) => l.layer === extraction.recommendedLayer)!;
  extraction.coherent = await coherentRange(model, recommended, scoring, {
    logitsBudget: options.steerability?.logitsBudget,
    unsteeredPerplexity: extraction.steerability.unsteeredPerplexity,
    measured: measuredCoherence(extraction.steerability, recommended.layer),
  }, { signal: controls.signal }).catch(cancelled);
  return extraction;
}

/**
 * Tokens scored per example, from where it starts to differ: teacher-forced, every later token is predicted
 * from a context that already carries the trait, so it measures the text's consistency more than the
 * steering, and costs a position at every scored layer and sign. Measured on stories260K-hf
 * (docs/steering-scores.md): 3 tokens after the pair's shared start pick the same layer as the whole text on
 * happy-sad-stories, a clear one on kind-mean-stories (where the whole text barely moves), at a third of the time.
 */
export const SCORED_TEXT_TOKENS = 3;
/** Persona answers share no start with their pair: their first tokens set the tone the rest follows. */
export const SCORED_ANSWER_TOKENS = 8;

/**
 * Text examples to score: the first tokens after the first one, or, where the sets are pairs that start
 * alike ("Lily was very happy" / "Lily was very sad"), the first tokens after the shared start.
 */
export function textScoringExamples(positive: number[][], negative: number[][]): ScoringExamples {
  const paired = positive.length === negative.length;
  const split = (ids: number[], other: number[] | undefined): ScoringExample => {
    let shared = 0;
    if (other) while (shared < Math.min(ids.length, other.length) - 1 && ids[shared] === other[shared]) shared++;
    const start = Math.max(1, shared);
    return { context: ids.slice(0, start), continuation: ids.slice(start, start + SCORED_TEXT_TOKENS) };
  };
  return {
    positive: positive.map((ids, i) => split(ids, paired ? negative[i] : undefined)),
    negative: negative.map((ids, i) => split(ids, paired ? positive[i] : undefined)),
  };
}

/**
 * Sampled answers under both system prompts, kept as pairs (same question, same sample) with both answers
 * non-empty. Every answer is a row of a batch (prompts sorted by length, shorter ones left-padded), each
 * drawing the random stream it would draw alone (seed + sample number), so batching changes no answer.
 */
async function answerAll(
  model: SteerableModel,
  positivePrompts: number[][],
  negativePrompts: number[][],
  options: ExtractOptions,
  controls: ExtractControls,
) {
  const perQuestion = options.answersPerQuestion ?? 2;
  const maxNewTokens = options.answerTokens ?? 48;
  const seed = options.seed ?? 0;
  const rowsPerBatch = Math.max(1, options.answerRows ?? 32);
  const jobs = [positivePrompts, negativePrompts].flatMap((prompts, side) =>
    prompts.flatMap((prompt, question) => Array.from({ length: perQuestion }, (_, sample) => ({ side, question, sample, prompt }))));
  jobs.sort((a, b) => a.prompt.length - b.prompt.length);
  // A graph that cannot pad (see canPadLeft) batches prompts of one length only.
  const canPad = await model.canPadLeft();
  const batches: (typeof jobs)[] = [];
  for (const job of jobs) {
    const last = batches.at(-1);
    const fits = last && last.length < rowsPerBatch && (canPad || last[0].prompt.length === job.prompt.length);
    if (fits) last.push(job);
    else batches.push([job]);
  }

  const answers = [positivePrompts, negativePrompts].map((prompts) => prompts.map(() => new Array<number[]>(perQuestion)));
  const texts = [positivePrompts, negativePrompts].map((prompts) => prompts.map(() => ''));
  let done = 0;
  for (const batch of batches) {
    controls.signal?.throwIfAborted(); // a cancelled generation returns early; the remaining batches must not start
    let reported = -1;
    const result = await generate(model, {
      rowPromptIds: batch.map((job) => job.prompt),
      rowSeeds: batch.map((job) => seed + job.sample),
      maxNewTokens,
      sampling: { temperature: options.temperature ?? 0.8, topP: 0.95 },
    }, {
      signal: controls.signal,
      onToken: ({ step }) => {
        if (step === reported) return;
        reported = step;
        controls.onProgress?.('answering', done + Math.floor((batch.length * (step + 1)) / maxNewTokens), jobs.length);
      },
    });
    batch.forEach((job, row) => {
      answers[job.side][job.question][job.sample] = result.rows[row].tokenIds;
      if (job.sample === 0) texts[job.side][job.question] = result.rows[row].text;
    });
    done += batch.length;
    controls.onProgress?.('answering', done, jobs.length);
  }

  const positive: (Example & { question: number })[] = [];
  const negative: (Example & { question: number })[] = [];
  const samples = { positive: [] as string[], negative: [] as string[] };
  const example = (prompt: number[], answerIds: number[]): Example => ({
    ids: [...prompt, ...answerIds],
    range: [prompt.length, prompt.length + answerIds.length],
  });
  for (let q = 0; q < positivePrompts.length; q++) {
    for (let k = 0; k < perQuestion; k++) {
      const [p, n] = [answers[0][q][k], answers[1][q][k]];
      if (p.length === 0 || n.length === 0) continue;
      positive.push({ ...example(positivePrompts[q], p), question: q });
      negative.push({ ...example(negativePrompts[q], n), question: q });
      if (k === 0 && samples.positive.length < 3) {
        samples.positive.push(texts[0][q]);
        samples.negative.push(texts[1][q]);
      }
    }
  }
  return { positive, negative, samples };
}

/** SHA-256 of a prompt set (a contrastive set, or a diff's prompts) as JSON. */
export async function hashSet(set: ContrastiveSet | { kind: 'diff'; prompts: unknown[] }): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(JSON.stringify(set)));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}
