/** Choosing the next token from one row of logits: greedy, or sampling with the usual filters. */

export interface SamplingOptions {
  /** 0 or undefined: greedy. */
  temperature?: number;
  /** Keep only the k most likely tokens (undefined or ≤ 0: all). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (undefined or ≥ 1: all). */
  topP?: number;
  /** HF semantics: over tokens already in the context, positive logits are divided by it, negative ones multiplied. */
  repetitionPenalty?: number;
  /** For the caller's createRng; chooseToken draws from the `random` it is given. */
  seed?: number;
}

/** mulberry32: a small, fast seeded PRNG returning numbers in [0, 1). */
export function createRng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The next token id. Order: repetition penalty → temperature → top-k → top-p → softmax → draw. */
export function chooseToken(
  logits: Float32Array,
  context: readonly number[],
  options: SamplingOptions,
  random: () => number,
): number {
  const scores = applyRepetitionPenalty(logits, context, options.repetitionPenalty ?? 1);
  const best = argmax(scores);
  const temperature = options.temperature ?? 0;
  if (!(temperature > 0)) return best;

  const vocabSize = scores.length;
  const topK = options.topK !== undefined && options.topK > 0 ? Math.min(Math.floor(options.topK), vocabSize) : vocabSize;
  const topP = options.topP !== undefined && options.topP > 0 && options.topP < 1 ? options.topP : 1;
  // Softmax numerators, relative to the best token so exp() cannot overflow.
  const maxScore = scores[best];
  const weightOf = (id: number) => Math.exp((scores[id] - maxScore) / temperature);

  if (topK === vocabSize && topP === 1) return drawFromAll(vocabSize, weightOf, random);

  if (topK === vocabSize) return drawFromNucleus(scores, maxScore, temperature, topP, random);
  const candidates = bestTokens(scores, topK);
  const nucleusMass = topP * massOf(candidates, candidates.length, weightOf);
  let kept = 0;
  let keptMass = 0;
  while (kept < candidates.length && (kept === 0 || keptMass < nucleusMass)) keptMass += weightOf(candidates[kept++]);

  let remaining = random() * keptMass;
  for (let i = 0; i < kept; i++) {
    remaining -= weightOf(candidates[i]);
    if (remaining < 0) return candidates[i];
  }
  return candidates[kept - 1]; // only reached through rounding
}

/** The logits with the penalty applied, copied so the caller's stay untouched; the logits themselves when there is none. */
function applyRepetitionPenalty(logits: Float32Array, context: readonly number[], penalty: number): Float32Array {
  if (penalty === 1 || context.length === 0) return logits;
  const scores = logits.slice();
  // Computed from the original logit, so a token repeated in the context is penalised once.
  for (const id of context) scores[id] = logits[id] > 0 ? logits[id] / penalty : logits[id] * penalty;
  return scores;
}

/** Index of the largest score, the first one on ties. */
export function argmax(scores: Float32Array): number {
  let best = 0;
  for (let id = 1; id < scores.length; id++) if (scores[id] > scores[best]) best = id;
  return best;
}

function drawFromAll(vocabSize: number, weightOf: (id: number) => number, random: () => number): number {
  let totalMass = 0;
  for (let id = 0; id < vocabSize; id++) totalMass += weightOf(id);
  let remaining = random() * totalMass;
  for (let id = 0; id < vocabSize; id++) {
    remaining -= weightOf(id);
    if (remaining < 0) return id;
  }
  return vocabSize - 1; // only reached through rounding
}

/** Buckets of the log-weight range in drawFromNucleus. */
const NUCLEUS_BUCKETS = 1024;

/**
 * Top-p alone. The nucleus of a flat distribution (a random model's, or any at a high temperature) is most
 * of the vocabulary, and ranking 32,000 token ids took 50 ms a draw. Instead the tokens go into buckets by
 * log-weight, best first; bucket masses locate the end of the nucleus and the drawn token, and only those
 * one or two buckets are ranked (by weight, then id, as bestTokens ranks). The same nucleus and the same
 * distribution as ranking everything; only the order of floating-point sums differs.
 */
function drawFromNucleus(scores: Float32Array, maxScore: number, temperature: number, topP: number, random: () => number): number {
  const vocabSize = scores.length;
  let widest = 0;
  for (let id = 0; id < vocabSize; id++) widest = Math.max(widest, maxScore - scores[id]);
  const bucketScale = widest > 0 ? (NUCLEUS_BUCKETS / widest) * (1 - 1e-9) : 0;
  const weights = new Float64Array(vocabSize);
  const bucketOf = new Uint16Array(vocabSize);
  const bucketMass = new Float64Array(NUCLEUS_BUCKETS);
  let totalMass = 0;
  for (let id = 0; id < vocabSize; id++) {
    const gap = maxScore - scores[id];
    const weight = Math.exp(-gap / temperature);
    const bucket = Math.min(NUCLEUS_BUCKETS - 1, Math.floor(gap * bucketScale));
    weights[id] = weight;
    bucketOf[id] = bucket;
    bucketMass[bucket] += weight;
    totalMass += weight;
  }
  const ranked = (bucket: number) => {
    const members: number[] = [];
    for (let id = 0; id < vocabSize; id++) if (bucketOf[id] === bucket) members.push(id);
    return members.sort((a, b) => weights[b] - weights[a]); // stable: equal weights stay in id order
  };

  // The nucleus: whole buckets, then the best of the bucket where it ends.
  const nucleusMass = topP * totalMass;
  let lastBucket = 0;
  let keptMass = 0;
  while (lastBucket < NUCLEUS_BUCKETS - 1 && keptMass + bucketMass[lastBucket] < nucleusMass) keptMass += bucketMass[lastBucket++];
  const lastMembers = ranked(lastBucket);
  let keptInLast = 0;
  while (keptInLast < lastMembers.length && (keptInLast === 0 || keptMass < nucleusMass)) keptMass += weights[lastMembers[keptInLast++]];

  let remaining = random() * keptMass;
  for (let bucket = 0; bucket <= lastBucket; bucket++) {
    if (bucket < lastBucket && remaining >= bucketMass[bucket]) {
      remaining -= bucketMass[bucket];
      continue;
    }
    const members = bucket === lastBucket ? lastMembers.slice(0, keptInLast) : ranked(bucket);
    for (const id of members) {
      remaining -= weights[id];
      if (remaining < 0) return id;
    }
    return members[members.length - 1]; // only reached through rounding
  }
  return lastMembers[keptInLast - 1]; // only reached through rounding
}

function massOf(ids: Int32Array, count: number, weightOf: (id: number) => number): number {
  let mass = 0;
  for (let i = 0; i < count; i++) mass += weightOf(ids[i]);
  return mass;
}

/** Whether token a ranks below token b: a lower score, or the same score and a later id (ties go to the first id, as in argmax). */
function ranksBelow(scores: Float32Array, a: number, b: number): boolean {
  return scores[a] < scores[b] || (scores[a] === scores[b] && a > b);
}

/** The `count` best token ids, best first. A heap of the best seen so far, worst on top: O(V log count), no full sort. */
export function bestTokens(scores: Float32Array, count: number): Int32Array {
  const heap = new Int32Array(count);
  for (let id = 0; id < count; id++) heap[id] = id;
  for (let i = (count >> 1) - 1; i >= 0; i--) siftDown(heap, i, scores);
  for (let id = count; id < scores.length; id++) {
    if (ranksBelow(scores, heap[0], id)) {
      heap[0] = id;
      siftDown(heap, 0, scores);
    }
  }
  return heap.sort((a, b) => (ranksBelow(scores, b, a) ? -1 : 1));
}

/** Restores the heap order (worst on top) below `parent`. */
function siftDown(heap: Int32Array, parent: number, scores: Float32Array): void {
  for (;;) {
    const left = 2 * parent + 1;
    if (left >= heap.length) return;
    const right = left + 1;
    const worstChild = right < heap.length && ranksBelow(scores, heap[right], heap[left]) ? right : left;
    if (!ranksBelow(scores, heap[worstChild], heap[parent])) return;
    [heap[parent], heap[worstChild]] = [heap[worstChild], heap[parent]];
    parent = worstChild;
  }
}
