/**
 * A loaded, instrumented decoder and its one forward pass. Everything else (generation, hidden-state
 * capture, checks) is a loop around `forward`.
 */
import { vectorLength } from '../vectors.ts';
import type { GraphAnalysis } from '../onnx/analysis.ts';
import { TensorType } from '../onnx/model.ts';
import { FLOAT16_MAX, float16Table, float32ToFloat16 } from './float16.ts';
import { type Backend, ort, runSession } from './runtime.ts';
import type { TextTokenizer } from './tokenizer.ts';

/**
 * What one batch row does to the residual at chosen layers: 'add' (the default) adds an absolute vector
 * (already scaled); 'ablate' removes the residual's component along a direction (any length), r − (r·û)û,
 * after the additions at that layer.
 */
export type SteeringRow = SteeringOperation[];
export interface SteeringOperation {
  layer: number;
  vector: ArrayLike<number>;
  operation?: 'add' | 'ablate';
}

/** The KV cache between steps: past tensors by input name (GPU buffers on WebGPU). */
export interface KvCache {
  tensors: Map<string, ort.Tensor>;
  length: number;
  batch: number;
  /** Graphs whose rows are not independent run row by row: one single-row cache per row (tensors empty). */
  rows?: KvCache[];
  /** Leading padding tokens per row, as the prefill that made this cache was given them. */
  leftPadding?: number[];
}

export interface ForwardStep {
  /** Token ids per batch row; every row has the same length (rows of different prompts: see leftPadding). */
  tokens: number[][];
  past?: KvCache;
  /** Prefill of different prompts in one batch: per row, how many tokens at its start are padding. They
   *  are masked out of attention; later steps read this from the cache. Positions still count the padding:
   *  rotary attention depends only on position differences, and some exports (stories260K's) build their
   *  causal mask from position_ids, which per-row positions would break. */
  leftPadding?: number[];
  /** One entry per batch row; missing rows or layers add nothing. Read once per array: the tensors
   *  built from it are reused while the same array comes back (every step of a generation). */
  steering?: SteeringRow[];
  /** Which logits to return: the last position of each row, every position, or none. */
  logits?: 'last' | 'all' | 'none';
  /** With 'all': the first position whose logits to return (default 0); the LM head skips those before it. */
  logitsFrom?: number;
  /** Layers whose residual to return, `[batch, seq, hidden]` flattened. */
  hiddenLayers?: number[];
  /** Return the updated KV cache (generation); otherwise it is released. */
  keepCache?: boolean;
}

export interface ForwardResult {
  /** `[batch, vocab]` for 'last', `[batch, seq − logitsFrom, vocab]` for 'all'. */
  logits?: Float32Array;
  hidden: Map<number, Float32Array>;
  cache?: KvCache;
}

export interface ModelConfig {
  [key: string]: unknown;
  num_hidden_layers?: number;
  hidden_size?: number;
  num_attention_heads?: number;
  num_key_value_heads?: number;
  head_dim?: number;
  max_position_embeddings?: number;
  eos_token_id?: number | number[];
  bos_token_id?: number;
}

export interface ModelInfo {
  id: string;
  file: string;
  backend: Backend;
  flavour: GraphAnalysis['flavour'];
  layerCount: number;
  hiddenSize: number;
  residualDtype: 'float32' | 'float16';
  vocabSize: number;
  contextLength: number;
  eosTokenIds: number[];
  hasChatTemplate: boolean;
  /** Tensor holding each layer's residual (a new Add where the graph never made one). */
  residualTensors: string[];
  /** Whether the graph was instrumented for directional ablation as well as addition. */
  ablation: boolean;
  residualLayout: GraphAnalysis['residualLayout'];
  /** Why the rows of a batch run one at a time (ops that couple them), or undefined when they run together. */
  rowsRunSeparately?: string;
  /** The check run right after loading (absent for models opened without one). */
  selfCheck?: SelfCheckResult;
  /** What was fused at load (absent for models opened without trying). */
  fusion?: FusionReport;
}

/** Contrib-op fusion at load (onnx/fusion.ts): what the session runs, and why not, where it was not kept. */
export interface FusionReport {
  /** "5 attention blocks → MultiHeadAttention"; empty when the session runs the graph as published. */
  applied: string[];
  /** Largest difference of the fused graph's logits from the published graph's in the check at load. */
  maxLogitError?: number;
  /** Why a fused graph was not used (its check failed, or it did not run). */
  fellBack?: string;
}

/** The cheap check run on every load: steering moves the residual by exactly v, and nothing else. */
export interface SelfCheckResult {
  ok: boolean;
  /** "steering verified exact on this model", or what failed. */
  message: string;
  checks: { name: string; error: number; tolerance: number; ok: boolean }[];
  milliseconds: number;
}

/** What graph surgery added: names of the steering inputs and hidden-state outputs, per layer. */
export interface Instrumentation {
  steeringInputs: Map<number, string>;
  /** Layer → input taking the unit vector to ablate (absent in graphs instrumented without it). */
  ablationInputs?: Map<number, string>;
  hiddenOutputs: Map<number, string>;
  /** Input choosing the first position the LM head reads, where the graph has no num_logits_to_keep. */
  logitsFrom?: string;
}

export class SteerableModel {
  private readonly zeroTensors = new Map<string, ort.Tensor>();
  private readonly steeringTensors = new WeakMap<SteeringRow[], { batch: number; feeds: Record<string, ort.Tensor> }>();
  /** Per-row steering arrays for graphs run row by row, kept so each row's tensors are built once. */
  private readonly steeringByRow = new WeakMap<SteeringRow[], SteeringRow[][]>();
  selfCheck?: SelfCheckResult;
  fusion?: FusionReport;
  private leftPaddingCheck?: Promise<boolean>;

  constructor(
    readonly id: string,
    readonly file: string,
    readonly session: ort.InferenceSession,
    readonly analysis: GraphAnalysis,
    readonly instrumentation: Instrumentation,
    readonly tokenizer: TextTokenizer | undefined,
    readonly config: ModelConfig,
    readonly generationConfig: ModelConfig,
    readonly backend: Backend,
  ) {}

  get info(): ModelInfo {
    const { analysis } = this;
    return {
      id: this.id,
      file: this.file,
      backend: this.backend,
      flavour: analysis.flavour,
      layerCount: analysis.layerCount,
      hiddenSize: analysis.hiddenSize,
      residualDtype: analysis.residualType === TensorType.FLOAT16 ? 'float16' : 'float32',
      vocabSize: this.vocabSize,
      contextLength: this.contextLength,
      eosTokenIds: this.eosTokenIds,
      hasChatTemplate: this.tokenizer?.hasChatTemplate ?? false,
      residualTensors: analysis.layers.map((site) => this.instrumentation.hiddenOutputs.get(site.layer)!),
      ablation: (this.instrumentation.ablationInputs?.size ?? 0) > 0,
      residualLayout: analysis.residualLayout,
      rowsRunSeparately: analysis.rowsCoupled,
      selfCheck: this.selfCheck,
      fusion: this.fusion,
    };
  }

  get vocabSize(): number {
    const declared = this.session.outputMetadata.find((m) => m.name === this.analysis.logits);
    const last = declared && declared.isTensor ? declared.shape[declared.shape.length - 1] : undefined;
    return typeof last === 'number' ? last : Number(this.config.vocab_size ?? this.tokenizer?.vocabSize ?? 0);
  }

  get contextLength(): number {
    return Number(this.config.max_position_embeddings ?? this.generationConfig.max_length ?? 2048);
  }

  /** Whether a batch of more than one row must run one row at a time. */
  private get rowByRow(): boolean {
    return this.analysis.rowsCoupled !== undefined;
  }

  get eosTokenIds(): number[] {
    const ids = new Set<number>();
    for (const source of [this.generationConfig.eos_token_id, this.config.eos_token_id]) {
      for (const id of [source].flat()) if (typeof id === 'number') ids.add(id);
    }
    for (const id of this.tokenizer?.eosTokenIds ?? []) ids.add(id);
    return [...ids];
  }

  /** An empty cache for `batch` rows: zero-length CPU tensors, as ONNX Runtime requires. */
  emptyCache(batch: number): KvCache {
    if (this.rowByRow && batch > 1) {
      return { tensors: new Map(), length: 0, batch, rows: Array.from({ length: batch }, () => this.emptyCache(1)) };
    }
    const tensors = new Map<string, ort.Tensor>();
    for (const entry of this.analysis.kv) {
      const [, heads, , headDim] = entry.shape;
      const numHeads = typeof heads === 'number' ? heads : Number(this.config.num_key_value_heads ?? this.config.num_attention_heads);
      const size = typeof headDim === 'number' ? headDim : Number(this.config.head_dim ?? this.analysis.hiddenSize / Number(this.config.num_attention_heads));
      if (!numHeads || !size) throw new Error(`cannot tell the KV cache shape of layer ${entry.layer}: config.json lacks num_key_value_heads/head_dim`);
      const dims = [batch, numHeads, 0, size];
      for (const name of [entry.keyInput, entry.valueInput]) {
        tensors.set(name, entry.elemType === TensorType.FLOAT16
          ? new ort.Tensor('float16', new Uint16Array(0), dims)
          : new ort.Tensor('float32', new Float32Array(0), dims));
      }
    }
    return { tensors, length: 0, batch };
  }

  /** A one-row cache copied to `batch` rows (rows that share an unsteered prompt share its prefill); the
   *  one-row cache is released. GPU tensors are read back once and go up again as inputs of the next step. */
  async replicateCache(cache: KvCache, batch: number): Promise<KvCache> {
    if (cache.batch !== 1) throw new Error(`replicateCache: the cache holds ${cache.batch} rows, not one`);
    const tensors = new Map<string, ort.Tensor>();
    const rowTensors = new Map<string, { type: ort.Tensor.Type; data: Float32Array | Uint16Array; dims: readonly number[] }>();
    for (const [name, tensor] of cache.tensors) {
      const data = (await tensor.getData()) as Float32Array | Uint16Array;
      rowTensors.set(name, { type: tensor.type, data, dims: tensor.dims });
      if (this.rowByRow) continue;
      const copies = new (data.constructor as Float32ArrayConstructor | Uint16ArrayConstructor)(data.length * batch);
      for (let row = 0; row < batch; row++) copies.set(data, row * data.length);
      tensors.set(name, new ort.Tensor(tensor.type, copies, [batch, ...tensor.dims.slice(1)]));
    }
    this.releaseCache(cache);
    if (!this.rowByRow) return { tensors, length: cache.length, batch };
    // Row by row: one single-row cache per row, reading the same (never written) data.
    const rows = Array.from({ length: batch }, (): KvCache => ({
      tensors: new Map([...rowTensors].map(([name, { type, data, dims }]) => [name, new ort.Tensor(type, data, dims)])),
      length: cache.length,
      batch: 1,
    }));
    return { tensors, length: cache.length, batch, rows };
  }

  releaseCache(cache: KvCache | undefined): void {
    if (!cache) return;
    for (const tensor of cache.tensors.values()) if (tensor.location === 'gpu-buffer') tensor.dispose();
    cache.tensors.clear();
    for (const row of cache.rows ?? []) this.releaseCache(row);
  }

  /**
   * Whether prompts of different lengths can share a batch, left-padded. A graph can honour the attention
   * mask's length but not where its zeros are (GroupQueryAttention counts a row's tokens from the mask's
   * sum), so this is checked once by numbers: a short prompt's last logits, padded beside a longer prompt,
   * against the prompt alone.
   */
  canPadLeft(): Promise<boolean> {
    this.leftPaddingCheck ??= (async () => {
      if (!this.analysis.attentionMask) return false;
      const ids = Array.from({ length: 8 }, (_, i) => (1 + 7 * i) % this.vocabSize);
      const short = ids.slice(0, 3);
      const alone = (await this.forward({ tokens: [short] })).logits!;
      const padded = (await this.forward({ tokens: [[...new Array<number>(5).fill(short[0]), ...short], ids], leftPadding: [5, 0] })).logits!;
      let worst = 0;
      let largest = 0;
      for (let i = 0; i < alone.length; i++) {
        worst = Math.max(worst, Math.abs(padded[i] - alone[i]));
        largest = Math.max(largest, Math.abs(alone[i]));
      }
      // fp16 graphs differ by rounding between batch shapes: 1 % of the largest logit is far below a real miss.
      return worst <= 0.01 * (1 + largest);
    })();
    return this.leftPaddingCheck;
  }

  async forward(step: ForwardStep): Promise<ForwardResult> {
    if (this.rowByRow && step.tokens.length > 1) return this.forwardRowByRow(step);
    const { analysis } = this;
    const batch = step.tokens.length;
    const length = step.tokens[0].length;
    if (step.tokens.some((row) => row.length !== length)) throw new Error('forward: every batch row needs the same number of tokens');
    const past = step.past ?? this.emptyCache(batch);
    if (past.batch !== batch) throw new Error(`forward: the cache holds ${past.batch} rows, the step ${batch}`);
    const total = past.length + length;
    const padding = step.past ? past.leftPadding : step.leftPadding;
    if (padding && padding.length !== batch) throw new Error(`forward: leftPadding has ${padding.length} entries for ${batch} rows`);
    if (padding?.some((pad) => pad > 0) && !analysis.attentionMask) {
      throw new Error(`${this.id} has no attention_mask input: prompts of different lengths cannot share a batch; run them one at a time`);
    }

    const feeds: Record<string, ort.Tensor> = {};
    feeds[analysis.inputIds.name] = intTensor(analysis.inputIds.elemType, step.tokens.flat(), [batch, length]);
    if (analysis.attentionMask) {
      const mask = Array.from({ length: batch * total }, (_, i) => (i % total < (padding?.[Math.floor(i / total)] ?? 0) ? 0 : 1));
      feeds[analysis.attentionMask.name] = intTensor(analysis.attentionMask.elemType, mask, [batch, total]);
    }
    if (analysis.positionIds) {
      const positions = Array.from({ length: batch * length }, (_, i) => past.length + (i % length));
      feeds[analysis.positionIds.name] = intTensor(analysis.positionIds.elemType, positions, [batch, length]);
    }
    const logitsFrom = step.logits === 'all' ? step.logitsFrom ?? 0 : length - 1;
    if (!(Number.isInteger(logitsFrom) && logitsFrom >= 0 && logitsFrom < length)) throw new Error(`forward: logitsFrom ${logitsFrom} is outside the ${length} positions`);
    if (this.instrumentation.logitsFrom) feeds[this.instrumentation.logitsFrom] = intTensor(TensorType.INT64, [logitsFrom], [1]);
    if (analysis.numLogitsToKeep) feeds[analysis.numLogitsToKeep.name] = intTensor(analysis.numLogitsToKeep.elemType, [length - logitsFrom], []);
    for (const [name, tensor] of past.tensors) feeds[name] = tensor;
    const cached = step.steering && this.steeringTensors.get(step.steering);
    let built = cached?.batch === batch ? cached.feeds : undefined;
    if (!built) {
      this.validateSteering(step.steering ?? []);
      built = {};
      for (const [layer, name] of this.instrumentation.steeringInputs) built[name] = this.operationTensor('add', layer, step.steering, batch);
      for (const [layer, name] of this.instrumentation.ablationInputs ?? []) built[name] = this.operationTensor('ablate', layer, step.steering, batch);
      if (step.steering) this.steeringTensors.set(step.steering, { batch, feeds: built });
    }
    Object.assign(feeds, built);

    const fetches: string[] = [];
    const logitsMode = step.logits ?? 'last';
    const hiddenLayers = [...new Set(step.hiddenLayers ?? [])];
    if (logitsMode !== 'none') fetches.push(analysis.logits);
    for (const layer of hiddenLayers) {
      const name = this.instrumentation.hiddenOutputs.get(layer);
      if (!name) throw new Error(`layer ${layer} does not exist (the model has ${analysis.layerCount} layers, 0–${analysis.layerCount - 1})`);
      fetches.push(name);
    }
    if (step.keepCache) for (const entry of analysis.kv) fetches.push(entry.keyOutput, entry.valueOutput);
    if (fetches.length === 0) throw new Error('forward: asked for nothing (no logits, hidden layers or cache)');

    let outputs: ort.InferenceSession.OnnxValueMapType;
    try {
      outputs = await runSession(this.session, this.backend, feeds, fetches);
    } catch (error) {
      if (step.past) this.releaseCache(step.past);
      throw error;
    }
    const result: ForwardResult = { hidden: new Map() };
    try {
      if (logitsMode !== 'none') {
        const logits = outputs[analysis.logits];
        const positions = logits.dims[1];
        const vocab = logits.dims[2];
        // Only the positions the caller wants are converted (a graph without a way to skip the others
        // computed them all).
        result.logits = readFloat(logits.data, { batch, positions, keep: length - logitsFrom, width: vocab });
        logits.dispose();
      }
      for (const layer of hiddenLayers) {
        const tensor = outputs[this.instrumentation.hiddenOutputs.get(layer)!];
        result.hidden.set(layer, readFloat(tensor.data));
        tensor.dispose();
      }
    } finally {
      if (step.keepCache) {
        const tensors = new Map<string, ort.Tensor>();
        for (const entry of analysis.kv) {
          tensors.set(entry.keyInput, outputs[entry.keyOutput]);
          tensors.set(entry.valueInput, outputs[entry.valueOutput]);
        }
        result.cache = { tensors, length: total, batch, leftPadding: padding };
      }
      if (step.past) this.releaseCache(step.past);
    }
    return result;
  }

  /**
   * One forward per row, joined as if batched: for graphs where a row's result depends on the others
   * (per-tensor dynamic quantisation), so that each row is exactly what it gives alone.
   */
  private async forwardRowByRow(step: ForwardStep): Promise<ForwardResult> {
    const batch = step.tokens.length;
    if (step.past && (step.past.batch !== batch || step.past.rows?.length !== batch)) {
      throw new Error(`forward: the cache holds ${step.past.batch} rows, the step ${batch}`);
    }
    let steering = step.steering && this.steeringByRow.get(step.steering);
    if (step.steering && !steering) {
      steering = Array.from({ length: batch }, (_, row) => [step.steering![row] ?? []]);
      this.steeringByRow.set(step.steering, steering);
    }
    const results: ForwardResult[] = [];
    try {
      for (let row = 0; row < batch; row++) {
        results.push(await this.forward({
          ...step, tokens: [step.tokens[row]], past: step.past?.rows![row], steering: steering?.[row], leftPadding: step.leftPadding && [step.leftPadding[row]],
        }));
      }
    } catch (error) {
      // The failed row released its own cache; release the others' too.
      step.past?.rows!.slice(results.length + 1).forEach((cache) => this.releaseCache(cache));
      results.forEach((result) => this.releaseCache(result.cache));
      throw error;
    }
    const joined: ForwardResult = { hidden: new Map() };
    if (results[0].logits) joined.logits = concatFloats(results.map((result) => result.logits!));
    for (const layer of results[0].hidden.keys()) joined.hidden.set(layer, concatFloats(results.map((result) => result.hidden.get(layer)!)));
    if (step.keepCache) {
      joined.cache = { tensors: new Map(), length: results[0].cache!.length, batch, rows: results.map((result) => result.cache!) };
    }
    return joined;
  }

  /** Every operation names an instrumented layer and holds `hidden` finite values; ablation needs a
   *  non-zero direction, one per layer and row. */
  private validateSteering(rows: SteeringRow[]): void {
    const hidden = this.analysis.hiddenSize;
    for (const row of rows) {
      const ablated = new Set<number>();
      for (const { layer, vector, operation = 'add' } of row) {
        if (!this.instrumentation.steeringInputs.has(layer)) {
          throw new Error(`cannot steer layer ${layer}: this model's steerable layers are 0–${this.analysis.layerCount - 1}`);
        }
        if (vector.length !== hidden) {
          throw new Error(`steering vector for layer ${layer} has ${vector.length} values; this model's hidden size is ${hidden}`);
        }
        for (let i = 0; i < hidden; i++) {
          if (!Number.isFinite(vector[i])) throw new Error(`steering vector for layer ${layer} holds ${vector[i]} at index ${i}: every value must be finite`);
        }
        if (operation !== 'ablate') continue;
        if (!this.instrumentation.ablationInputs?.has(layer)) throw new Error(`this model was instrumented without ablation inputs: cannot ablate layer ${layer}`);
        if (ablated.has(layer)) throw new Error(`one row ablates two directions at layer ${layer}: ablate one (or their span, one at a time across layers)`);
        if (!(vectorLength(vector) > 0)) throw new Error(`the direction to ablate at layer ${layer} has zero length`);
        ablated.add(layer);
      }
    }
  }

  /**
   * `[batch, 1, hidden]` in the residual's type for one layer: the sum of each row's additions there, or
   * the unit vector each row ablates there (zeros for rows that do neither: an identity in both cases).
   */
  private operationTensor(kind: 'add' | 'ablate', layer: number, rows: SteeringRow[] | undefined, batch: number): ort.Tensor {
    const hidden = this.analysis.hiddenSize;
    const fp16 = this.analysis.layers[layer].elemType === TensorType.FLOAT16;
    const values = new Float32Array(batch * hidden);
    let any = false;
    rows?.forEach((row, index) => {
      for (const { layer: at, vector, operation = 'add' } of row) {
        if (at !== layer || operation !== kind) continue;
        const scale = kind === 'ablate' ? 1 / vectorLength(vector) : 1;
        for (let i = 0; i < hidden; i++) values[index * hidden + i] += vector[i] * scale;
        any = true;
      }
    });
    if (!any) {
      const key = `${layer}/${batch}`;
      let zeros = this.zeroTensors.get(key);
      if (!zeros) this.zeroTensors.set(key, (zeros = floatTensor(fp16, values, [batch, 1, hidden])));
      return zeros;
    }
    if (fp16) for (let i = 0; i < values.length; i++) values[i] = Math.max(-FLOAT16_MAX, Math.min(FLOAT16_MAX, values[i]));
    return floatTensor(fp16, values, [batch, 1, hidden]);
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}

function concatFloats(parts: Float32Array[]): Float32Array {
  const joined = new Float32Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    joined.set(part, offset);
    offset += part.length;
  }
  return joined;
}

function floatTensor(fp16: boolean, values: Float32Array, dims: number[]): ort.Tensor {
  return fp16 ? new ort.Tensor('float16', float32ToFloat16(values), dims) : new ort.Tensor('float32', values, dims);
}

function intTensor(elemType: number, values: number[], dims: number[]): ort.Tensor {
  return elemType === TensorType.INT32
    ? new ort.Tensor('int32', Int32Array.from(values), dims)
    : new ort.Tensor('int64', BigInt64Array.from(values, (v) => BigInt(v)), dims);
}

/**
 * Float32 values of an output; with `lastOf`, only the last position of each row of a `[batch, positions,
 * width]` tensor. ORT hands float16 back as Uint16Array bits (or a Float16Array where the platform has one).
 */
/** A tensor's values as fp32; with `lastOf`, only the last `keep` of each row's `positions` rows of `width`. */
function readFloat(data: ort.Tensor['data'], lastOf?: { batch: number; positions: number; keep: number; width: number }): Float32Array {
  const values = data as ArrayLike<number>;
  const halves = data instanceof Uint16Array ? float16Table() : undefined;
  // fp32 holding exactly what is wanted (a decode step's logits, every position asked for): no copy.
  if (data instanceof Float32Array && (!lastOf || lastOf.keep === lastOf.positions)) return data;
  if (!lastOf) return Float32Array.from({ length: values.length }, (_, i) => (halves ? halves[values[i]] : values[i]));
  const { batch, positions, keep, width } = lastOf;
  const rowLength = keep * width;
  const out = new Float32Array(batch * rowLength);
  for (let row = 0; row < batch; row++) {
    const from = (row * positions + positions - keep) * width;
    // One plain loop per type: a call per vocabulary entry showed in profiles of the generation loop.
    if (halves) for (let i = 0; i < rowLength; i++) out[row * rowLength + i] = halves[values[from + i]];
    else for (let i = 0; i < rowLength; i++) out[row * rowLength + i] = values[from + i];
  }
  return out;
}
