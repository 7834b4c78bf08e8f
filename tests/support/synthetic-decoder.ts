/**
 * Llama-style decoders with random (seeded) weights in the shape of a real model, written as the two
 * export flavours Tiller meets on the Hub, so benchmarks see real per-token costs:
 *  - 'torch': a torch.onnx / Optimum export, fp32, plain ops (RMSNorm as Pow/ReduceMean/Sqrt, rotary from
 *    position_ids, attention as MatMul/Softmax with a causal mask), residual Adds, weights embedded in
 *    onnx/model.onnx;
 *  - 'builder': an onnxruntime-genai model builder export, fp16, SkipSimplifiedLayerNormalization with the
 *    residual on output 3, GroupQueryAttention with rotary inside, no position_ids, weights in
 *    onnx/model_fp16.onnx_data (the name Transformers.js looks for).
 * Both tie the LM head to the embedding (MatMul by its transpose), as SmolLM2 does. With `weights: 'q4'`
 * every projection is a MatMulNBits (4-bit, blocks of 32 along K, symmetric), as the q4 / q4f16 files
 * Transformers.js publishes hold them; the embedding, norms and tied LM head stay float.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { float32ToFloat16 } from '../../src/engine/model/float16.ts';
import { TensorType } from '../../src/engine/onnx/model.ts';
import { ProtoWriter, WIRE_FIXED32 } from '../../src/engine/onnx/proto.ts';
import { createRng } from '../../src/engine/generation/sampling.ts';

export interface DecoderShape {
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
  maxPositions: number;
}

/** HuggingFaceTB/SmolLM2-135M: 135M parameters with the tied embedding. */
export const SMOLLM2_135M: DecoderShape = { layers: 30, hidden: 576, heads: 9, kvHeads: 3, intermediate: 1536, vocab: 49152, maxPositions: 2048 };

export type ExportFlavour = 'torch' | 'builder';
/** 'q4-dequantized': the q4 weights decoded back into plain MatMuls, the reference a q4 graph is checked against. */
export type WeightFormat = 'float' | 'q4' | 'q4-dequantized';

/** MatMulNBits' block along K, in the 4-bit variants Transformers.js publishes. */
const Q4_BLOCK = 32;

/** How a torch-flavour decoder is put together; one preset per family structure below. */
export interface TorchStructure {
  modelType: string;
  positions: 'rotary' | 'learned';
  /** An input position_ids (otherwise positions are counted from attention_mask, as older OPT exports do). */
  positionIdsInput: boolean;
  norm: 'rms' | 'layer';
  mlp: 'gated' | 'gelu';
  /** Biases on every projection. */
  biases: boolean;
  /** 'parallel': x + attn(ln1 x) + mlp(ln2 x); 'parallel-shared-norm': one norm feeds both (Phi). */
  residual: 'sequential' | 'parallel' | 'parallel-shared-norm';
  /** The MLP's residual Add on [batch·seq, hidden], reshaped back after it (OPT). */
  flattenMlp?: boolean;
  lmHeadBias?: boolean;
  /** Projections dynamically quantised to 8 bits (per-tensor activation scale: rows of a batch interact). */
  q8?: boolean;
}

export const LLAMA: TorchStructure = { modelType: 'llama', positions: 'rotary', positionIdsInput: true, norm: 'rms', mlp: 'gated', biases: false, residual: 'sequential' };

/** The structures of the families Transformers.js runs beyond Llama-style decoders. */
export const STRUCTURES = {
  gpt2: { modelType: 'gpt2', positions: 'learned', positionIdsInput: true, norm: 'layer', mlp: 'gelu', biases: true, residual: 'sequential' },
  opt: { modelType: 'opt', positions: 'learned', positionIdsInput: false, norm: 'layer', mlp: 'gelu', biases: true, residual: 'sequential', flattenMlp: true },
  gpt_neox: { modelType: 'gpt_neox', positions: 'rotary', positionIdsInput: true, norm: 'layer', mlp: 'gelu', biases: true, residual: 'parallel' },
  phi: { modelType: 'phi', positions: 'rotary', positionIdsInput: true, norm: 'layer', mlp: 'gelu', biases: true, residual: 'parallel-shared-norm', lmHeadBias: true },
  'llama-q8': { ...LLAMA, q8: true },
} satisfies Record<string, TorchStructure>;
export type Family = keyof typeof STRUCTURES;

/** A torch-flavour export of one family's structure, with that family's config.json field names. */
export function syntheticFamily(shape: DecoderShape, family: Family, seed = 1): SyntheticModel {
  return syntheticDecoder(shape, 'torch', seed, STRUCTURES[family]);
}

/** config.json in the family's own field names (GPT-2 says n_layer, OPT ffn_dim, …). */
function familyConfig(shape: DecoderShape, structure: TorchStructure): Record<string, unknown> {
  const { layers, hidden, heads, intermediate, vocab, maxPositions } = shape;
  if (structure.modelType === 'gpt2') {
    return { model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], n_layer: layers, n_embd: hidden, n_head: heads, n_inner: intermediate, n_positions: maxPositions, n_ctx: maxPositions, vocab_size: vocab };
  }
  if (structure.modelType === 'opt') {
    return { model_type: 'opt', architectures: ['OPTForCausalLM'], num_hidden_layers: layers, hidden_size: hidden, num_attention_heads: heads, ffn_dim: intermediate, max_position_embeddings: maxPositions, vocab_size: vocab, word_embed_proj_dim: hidden };
  }
  return {
    model_type: structure.modelType, hidden_size: hidden, intermediate_size: intermediate, num_hidden_layers: layers, num_attention_heads: heads,
    num_key_value_heads: shape.kvHeads, max_position_embeddings: maxPositions, vocab_size: vocab, ...(structure.q8 ? { 'transformers.js_config': { dtype: 'q8' } } : {}),
  };
}

const ROPE_THETA = 100000;
const RMS_EPSILON = 1e-5;

type Dims = (number | string)[];

/** A graph under construction: nodes, initializers (raw bytes), I/O declarations. */
class GraphWriter {
  readonly graph = new ProtoWriter();
  private count = 0;
  /** Weight bytes kept outside the graph, with the offset each tensor starts at. */
  readonly external: Uint8Array[] = [];
  private externalLength = 0;

  constructor(private readonly externalFile?: string) {}

  node(op: string, inputs: string[], outputs: number | string[], attributes: (a: AttributeWriter) => void = () => {}, domain = ''): string[] {
    const names = typeof outputs === 'number' ? Array.from({ length: outputs }, (_, i) => `/${op}_${this.count}/output_${i}`) : outputs;
    this.graph.message(1, (n) => {
      inputs.forEach((i) => n.string(1, i));
      names.forEach((o) => n.string(2, o));
      n.string(3, `/${op}_${this.count++}`).string(4, op);
      attributes(new AttributeWriter(n));
      if (domain) n.string(7, domain);
    });
    return names;
  }

  /** One-output node; returns its output name. */
  op(op: string, inputs: string[], attributes?: (a: AttributeWriter) => void, domain?: string): string {
    return this.node(op, inputs, 1, attributes, domain)[0];
  }

  initializer(name: string, elemType: number, dims: number[], data: Uint8Array, external = false): string {
    this.graph.message(5, (t) => {
      dims.forEach((d) => t.int(1, d));
      t.int(2, elemType).string(8, name);
      if (external && this.externalFile) {
        const entry = (key: string, value: string) => t.message(13, (e) => e.string(1, key).string(2, value));
        entry('location', this.externalFile);
        entry('offset', String(this.externalLength));
        entry('length', String(data.length));
        t.int(14, 1);
        this.external.push(data);
        this.externalLength += data.length;
      } else {
        t.bytes(9, data);
      }
    });
    return name;
  }

  int64s(name: string, values: number[], scalar = false): string {
    const data = new Uint8Array(BigInt64Array.from(values, BigInt).buffer);
    return this.initializer(name, TensorType.INT64, scalar ? [] : [values.length], data);
  }

  io(field: 11 | 12, name: string, elemType: number, dims: Dims): void {
    this.graph.message(field, (v) =>
      v.string(1, name).message(2, (t) =>
        t.message(1, (tt) => {
          tt.int(1, elemType).message(2, (shape) => {
            for (const d of dims) shape.message(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.string(2, d)));
          });
        })));
  }
}

class AttributeWriter {
  constructor(private readonly node: ProtoWriter) {}
  int(name: string, value: number): this {
    this.node.message(5, (a) => a.string(1, name).int(3, value).int(20, 2));
    return this;
  }
  float(name: string, value: number): this {
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setFloat32(0, value, true);
    this.node.message(5, (a) => a.string(1, name).tag(2, WIRE_FIXED32).raw(bytes).int(20, 1));
    return this;
  }
  ints(name: string, values: number[]): this {
    this.node.message(5, (a) => {
      a.string(1, name);
      values.forEach((v) => a.int(8, v));
      a.int(20, 7);
    });
    return this;
  }
}

export interface SyntheticModel {
  /** The .onnx file's path in the folder (Transformers.js layout) and its bytes. */
  file: string;
  graph: Uint8Array;
  /** External data file name (beside the graph) and its bytes, for the builder flavour. */
  externalData?: { path: string; data: Uint8Array };
  config: Record<string, unknown>;
}

/** Builds the graph in memory; weights are uniform with variance 1/fan-in (fp16-safe), seeded. */
export function syntheticDecoder(
  shape: DecoderShape, flavour: ExportFlavour, seed = 1, structure: TorchStructure = LLAMA, weights: WeightFormat = 'float',
): SyntheticModel {
  const { layers, hidden, heads, kvHeads, intermediate, vocab, maxPositions } = shape;
  const headDim = hidden / heads;
  const fp16 = flavour === 'builder';
  const q4 = weights === 'q4';
  const quantised = weights !== 'float';
  const floatType = fp16 ? TensorType.FLOAT16 : TensorType.FLOAT;
  // Transformers.js names: model{,_fp16,_q4,_q4f16}.onnx.
  const baseName = `model${q4 ? (fp16 ? '_q4f16' : '_q4') : fp16 ? '_fp16' : ''}`;
  const externalName = fp16 ? `${baseName}.onnx_data` : undefined;
  const g = new GraphWriter(externalName);
  const random = createRng(seed);
  const floats = (values: Float32Array) => (fp16 ? new Uint8Array(float32ToFloat16(values).buffer) : new Uint8Array(values.buffer));
  const randomValues = (dims: number[], fanIn: number, centre = 0) => {
    const bound = Math.sqrt(3 / fanIn);
    const values = new Float32Array(dims.reduce((a, b) => a * b, 1));
    for (let i = 0; i < values.length; i++) values[i] = centre + (random() * 2 - 1) * bound;
    return values;
  };
  const weight = (name: string, dims: number[], fanIn: number, centre = 0) =>
    g.initializer(name, floatType, dims, floats(randomValues(dims, fanIn, centre)), true);
  /**
   * `input` times a [K, N] weight, 4-bit. ONNX Runtime's MatMulNBits (com.microsoft) takes B transposed and
   * packed, uint8 [N, K/32, 16], two 4-bit codes a byte with the lower K index in the low nibble; scales
   * [N · K/32] in the activations' type; no zero_points input, so every code is read as (code − 8) · scale.
   * 'q4-dequantized' writes the decoded weights as a plain MatMul instead, the reference for the q4 graph.
   */
  const q4Product = (input: string, name: string, K: number, N: number) => {
    const values = randomValues([K, N], K);
    const dequantised = new Float32Array(K * N);
    const blocks = K / Q4_BLOCK;
    const packed = new Uint8Array(N * blocks * (Q4_BLOCK / 2));
    const scales = new Float32Array(N * blocks);
    for (let n = 0; n < N; n++) {
      for (let b = 0; b < blocks; b++) {
        let largest = 0;
        for (let j = 0; j < Q4_BLOCK; j++) largest = Math.max(largest, Math.abs(values[(b * Q4_BLOCK + j) * N + n]));
        const scale = largest / 7 || 1;
        scales[n * blocks + b] = scale;
        for (let j = 0; j < Q4_BLOCK; j++) {
          const code = Math.max(-8, Math.min(7, Math.round(values[(b * Q4_BLOCK + j) * N + n] / scale))) + 8;
          packed[(n * blocks + b) * (Q4_BLOCK / 2) + (j >> 1)] |= code << ((j & 1) * 4);
          dequantised[(b * Q4_BLOCK + j) * N + n] = (code - 8) * scale;
        }
      }
    }
    if (!q4) return g.op('MatMul', [input, g.initializer(name, floatType, [K, N], floats(dequantised), true)]);
    const packedName = g.initializer(`${name}_Q4`, TensorType.UINT8, [N, blocks, Q4_BLOCK / 2], packed, true);
    const scalesName = g.initializer(`${name}_scales`, floatType, [N * blocks], floats(scales), true);
    return g.op('MatMulNBits', [input, packedName, scalesName],
      (a) => a.int('K', K).int('N', N).int('bits', 4).int('block_size', Q4_BLOCK), 'com.microsoft');
  };
  /** x · W (+ b where the structure has biases); q8 as Optimum's dynamic quantisation writes it:
   *  DynamicQuantizeLinear (one scale for the whole tensor, batch included) → MatMulInteger → rescale. */
  const linear = (x: string, name: string, inputs: number, outputs: number) => {
    let product: string;
    if (structure.q8) {
      const values = randomValues([inputs, outputs], inputs);
      const weightScale = values.reduce((max, v) => Math.max(max, Math.abs(v)), 0) / 127;
      const quantised = Int8Array.from(values, (v) => Math.round(v / weightScale));
      const [xq, xScale, xZeroPoint] = g.node('DynamicQuantizeLinear', [x], 3);
      const integer = g.op('MatMulInteger', [xq, g.initializer(`${name}.weight_quantized`, TensorType.INT8, [inputs, outputs], new Uint8Array(quantised.buffer)),
        xZeroPoint, g.initializer(`${name}.weight_zero_point`, TensorType.INT8, [], new Uint8Array(1))]);
      const scale = g.op('Mul', [xScale, g.initializer(`${name}.weight_scale`, TensorType.FLOAT, [], new Uint8Array(Float32Array.of(weightScale).buffer))]);
      product = g.op('Mul', [g.op('Cast', [integer], (a) => a.int('to', TensorType.FLOAT)), scale]);
    } else if (quantised) {
      product = q4Product(x, `${name}.weight`, inputs, outputs);
    } else {
      product = g.op('MatMul', [x, weight(`${name}.weight`, [inputs, outputs], inputs)]);
    }
    return structure.biases ? g.op('Add', [weight(`${name}.bias`, [outputs], 100), product]) : product;
  };
  const ones = (name: string) => g.initializer(name, floatType, [hidden], floats(new Float32Array(hidden).fill(1)), true);
  const scalar = (name: string, value: number) => g.initializer(name, floatType, [], floats(Float32Array.of(value)));

  // Rotary tables: torch reads [maxPositions, headDim] rows by position id; GQA takes the half-width cache.
  const half = headDim / 2;
  const cosTable = new Float32Array(maxPositions * (fp16 ? half : headDim));
  const sinTable = new Float32Array(cosTable.length);
  const width = fp16 ? half : headDim;
  for (let p = 0; p < maxPositions; p++) {
    for (let i = 0; i < width; i++) {
      const angle = p / ROPE_THETA ** ((2 * (i % half)) / headDim);
      cosTable[p * width + i] = Math.cos(angle);
      sinTable[p * width + i] = Math.sin(angle);
    }
  }
  const rotaryTables = fp16 || structure.positions === 'rotary';
  const cos = !rotaryTables ? '' : g.initializer(fp16 ? 'cos_cache' : 'model.rotary_emb.cos', floatType, [maxPositions, width], floats(cosTable), true);
  const sin = !rotaryTables ? '' : g.initializer(fp16 ? 'sin_cache' : 'model.rotary_emb.sin', floatType, [maxPositions, width], floats(sinTable), true);

  const embed = weight('model.embed_tokens.weight', [vocab, hidden], hidden);
  g.io(11, 'input_ids', TensorType.INT64, ['batch_size', 'sequence_length']);
  g.io(11, 'attention_mask', TensorType.INT64, ['batch_size', 'total_sequence_length']);
  if (!fp16 && structure.positionIdsInput) g.io(11, 'position_ids', TensorType.INT64, ['batch_size', 'sequence_length']);
  for (let l = 0; l < layers; l++) {
    for (const kind of ['key', 'value']) g.io(11, `past_key_values.${l}.${kind}`, floatType, ['batch_size', kvHeads, 'past_sequence_length', headDim]);
  }
  g.io(12, 'logits', floatType, ['batch_size', 'sequence_length', vocab]);
  for (let l = 0; l < layers; l++) {
    for (const kind of ['key', 'value']) g.io(12, `present.${l}.${kind}`, floatType, ['batch_size', kvHeads, 'total_sequence_length', headDim]);
  }

  const axis1 = g.int64s('const_axis_1', [1]);
  const one = g.int64s('const_one', [1], true);
  const embedded = g.op('Gather', [embed, 'input_ids']);
  const mlp = (l: number, normed: string) => {
    const prefix = `model.layers.${l}.mlp`;
    if (structure.mlp === 'gelu') {
      // fc1 → GELU (erf form) → fc2, as GPT-2, OPT, GPT-NeoX and Phi have it.
      const up = linear(normed, `${prefix}.fc1`, hidden, intermediate);
      const erf = g.op('Erf', [g.op('Mul', [up, scalar(`${prefix}.gelu_scale`, Math.SQRT1_2)])]);
      const gelu = g.op('Mul', [g.op('Mul', [up, scalar(`${prefix}.gelu_half`, 0.5)]), g.op('Add', [erf, scalar(`${prefix}.gelu_one`, 1)])]);
      return linear(gelu, `${prefix}.fc2`, intermediate, hidden);
    }
    const gate = linear(normed, `${prefix}.gate_proj`, hidden, intermediate);
    const up = linear(normed, `${prefix}.up_proj`, hidden, intermediate);
    const silu = g.op('Mul', [gate, g.op('Sigmoid', [gate])]);
    return linear(g.op('Mul', [silu, up]), `${prefix}.down_proj`, intermediate, hidden);
  };
  const projections = (l: number, normed: string) => ({
    q: linear(normed, `model.layers.${l}.self_attn.q_proj`, hidden, hidden),
    k: linear(normed, `model.layers.${l}.self_attn.k_proj`, hidden, kvHeads * headDim),
    v: linear(normed, `model.layers.${l}.self_attn.v_proj`, hidden, kvHeads * headDim),
  });
  const lmHead = (normed: string) => {
    const tied = g.op('Transpose', [embed], (a) => a.ints('perm', [1, 0]));
    g.node('MatMul', [normed, tied], ['logits']);
  };

  if (fp16) {
    // Builder: GQA's seqlens_k (tokens so far − 1, per row) and total length from the attention mask.
    const summed = g.op('ReduceSum', ['attention_mask', axis1], (a) => a.int('keepdims', 0));
    const seqlensK = g.op('Cast', [g.op('Sub', [summed, one])], (a) => a.int('to', TensorType.INT32));
    const total = g.op('Cast', [g.op('Gather', [g.op('Shape', ['attention_mask']), one], (a) => a.int('axis', 0))], (a) => a.int('to', TensorType.INT32));
    let normed = g.op('SimplifiedLayerNormalization', [embedded, ones('model.layers.0.input_layernorm.weight')],
      (a) => a.float('epsilon', RMS_EPSILON).int('axis', -1).int('stash_type', 1));
    let residual = embedded;
    const skipNorm = (input: string, skip: string, gamma: string, last: boolean) => {
      const outputs = last ? [`/final_norm/output_0`] : [`${gamma}/output_0`, '', '', `${gamma}/output_3`];
      g.node('SkipSimplifiedLayerNormalization', [input, skip, gamma], outputs, (a) => a.float('epsilon', RMS_EPSILON), 'com.microsoft');
      return { normed: outputs[0], residual: outputs[3] };
    };
    for (let l = 0; l < layers; l++) {
      const { q, k, v } = projections(l, normed);
      const [attention] = g.node('GroupQueryAttention',
        [q, k, v, `past_key_values.${l}.key`, `past_key_values.${l}.value`, seqlensK, total, cos, sin],
        [`/model/layers.${l}/attn/output_0`, `present.${l}.key`, `present.${l}.value`],
        (a) => a.int('num_heads', heads).int('kv_num_heads', kvHeads).int('do_rotary', 1).int('rotary_interleaved', 0).float('scale', 1 / Math.sqrt(headDim)),
        'com.microsoft');
      const out = linear(attention, `model.layers.${l}.self_attn.o_proj`, hidden, hidden);
      const post = skipNorm(residual, out, ones(`model.layers.${l}.post_attention_layernorm.weight`), false);
      const last = l === layers - 1;
      const next = skipNorm(post.residual!, mlp(l, post.normed), ones(last ? 'model.norm.weight' : `model.layers.${l + 1}.input_layernorm.weight`), last);
      normed = next.normed;
      residual = next.residual!;
    }
    lmHead(normed);
  } else {
    // torch: causal + padding mask [batch, 1, seq, total] from the positions and attention_mask.
    let positions = 'position_ids';
    if (!structure.positionIdsInput) {
      // OPT: positions counted from attention_mask (cumsum · mask − 1), the last `seq` of them.
      const counted = g.op('Sub', [g.op('Mul', [g.op('CumSum', ['attention_mask', g.int64s('const_axis_1_scalar', [1], true)]), 'attention_mask']), one]);
      const pastLength = g.op('Sub', [g.op('Gather', [g.op('Shape', ['attention_mask']), axis1], (a) => a.int('axis', 0)),
        g.op('Gather', [g.op('Shape', ['input_ids']), axis1], (a) => a.int('axis', 0))]);
      positions = g.op('Slice', [counted, pastLength, g.int64s('const_end', [2 ** 62]), axis1]);
    }
    const queryPositions = g.op('Unsqueeze', [positions, g.int64s('const_axes_1_3', [1, 3])]);
    const totalLength = g.op('Gather', [g.op('Shape', ['attention_mask']), one], (a) => a.int('axis', 0));
    const keyPositions = g.op('Range', [g.int64s('const_zero', [0], true), totalLength, one]);
    const causal = g.op('LessOrEqual', [keyPositions, queryPositions]);
    const padding = g.op('Cast', [g.op('Unsqueeze', ['attention_mask', g.int64s('const_axes_1_2', [1, 2])])], (a) => a.int('to', TensorType.BOOL));
    const mask = g.op('Where', [g.op('And', [causal, padding]), scalar('const_mask_keep', 0), scalar('const_mask_drop', -3.4028234663852886e38)]);
    const norm = (x: string, name: string) => {
      if (structure.norm === 'layer') {
        // LayerNormalization with weight and bias (opset 17), as torch exports nn.LayerNorm.
        return g.op('LayerNormalization', [x, weight(`${name}.weight`, [hidden], 30, 1), weight(`${name}.bias`, [hidden], 100)],
          (a) => a.int('axis', -1).float('epsilon', 1e-5));
      }
      const meanSquare = g.op('ReduceMean', [g.op('Pow', [x, scalar(`${name}.two`, 2)])], (a) => a.ints('axes', [-1]).int('keepdims', 1));
      return g.op('Mul', [ones(`${name}.weight`), g.op('Mul', [x, g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [meanSquare, scalar(`${name}.epsilon`, RMS_EPSILON)])])])])]);
    };
    const queryHeadsShape = g.int64s('const_shape_query_heads', [0, 0, heads, headDim]);
    const kvHeadsShape = g.int64s('const_shape_kv_heads', [0, 0, kvHeads, headDim]);
    const splitHeads = (x: string, shape: string) => g.op('Transpose', [g.op('Reshape', [x, shape])], (a) => a.ints('perm', [0, 2, 1, 3]));
    let rotary = (x: string) => x;
    if (structure.positions === 'rotary') {
      const [start, middle, end] = [g.int64s('const_zero_1d', [0]), g.int64s('const_half', [half]), g.int64s('const_head_dim', [headDim])];
      const lastAxis = g.int64s('const_axis_last', [3]);
      const cosRows = g.op('Unsqueeze', [g.op('Gather', [cos, positions]), axis1]);
      const sinRows = g.op('Unsqueeze', [g.op('Gather', [sin, positions]), axis1]);
      rotary = (x: string) => {
        const first = g.op('Slice', [x, start, middle, lastAxis]);
        const second = g.op('Slice', [x, middle, end, lastAxis]);
        const rotated = g.op('Concat', [g.op('Neg', [second]), first], (a) => a.int('axis', -1));
        return g.op('Add', [g.op('Mul', [x, cosRows]), g.op('Mul', [rotated, sinRows])]);
      };
    }
    const groupShape = g.int64s('const_shape_kv_groups', [0, kvHeads, -1, headDim]);
    const scoresByHead = g.int64s('const_shape_scores_heads', [0, heads, -1, 0]);
    const scoresByGroup = g.int64s('const_shape_scores_groups', [0, kvHeads, -1, 0]);
    const headsShape = g.int64s('const_shape_heads_out', [0, heads, -1, headDim]);
    const mergeShape = g.int64s('const_shape_merge', [0, 0, hidden]);
    const attentionScale = scalar('const_attention_scale', 1 / Math.sqrt(headDim));
    const attention = (l: number, normed: string) => {
      const { q, k, v } = projections(l, normed);
      const keys = g.node('Concat', [`past_key_values.${l}.key`, rotary(splitHeads(k, kvHeadsShape))], [`present.${l}.key`], (a) => a.int('axis', 2))[0];
      const values = g.node('Concat', [`past_key_values.${l}.value`, splitHeads(v, kvHeadsShape)], [`present.${l}.value`], (a) => a.int('axis', 2))[0];
      // Grouped-query attention without repeating K/V: the query heads of one KV head become extra rows.
      const grouped = g.op('Reshape', [rotary(splitHeads(q, queryHeadsShape)), groupShape]);
      const scores = g.op('Mul', [g.op('MatMul', [grouped, g.op('Transpose', [keys], (a) => a.ints('perm', [0, 1, 3, 2]))]), attentionScale]);
      const masked = g.op('Add', [g.op('Reshape', [scores, scoresByHead]), mask]);
      const weights = g.op('Reshape', [g.op('Softmax', [masked], (a) => a.int('axis', -1)), scoresByGroup]);
      const context = g.op('Reshape', [g.op('MatMul', [weights, values]), headsShape]);
      const merged = g.op('Reshape', [g.op('Transpose', [context], (a) => a.ints('perm', [0, 2, 1, 3])), mergeShape]);
      return linear(merged, `model.layers.${l}.self_attn.o_proj`, hidden, hidden);
    };

    let residual = embedded;
    if (structure.positions === 'learned') {
      // GPT-2 reads wpe by position id, OPT by position + 2 (its table has two extra rows).
      const offset = structure.positionIdsInput ? 0 : 2;
      const table = weight('model.embed_positions.weight', [maxPositions + offset, hidden], hidden);
      const rows = offset ? g.op('Add', [positions, g.int64s('const_position_offset', [offset], true)]) : positions;
      residual = g.op('Add', [embedded, g.op('Gather', [table, rows])]);
    }
    for (let l = 0; l < layers; l++) {
      const prefix = `model.layers.${l}`;
      if (structure.residual === 'sequential') {
        const afterAttention = g.op('Add', [residual, attention(l, norm(residual, `${prefix}.input_layernorm`))]);
        if (structure.flattenMlp) {
          // OPT: the MLP and its residual Add work on [batch·seq, hidden], viewed back afterwards.
          const flat = g.op('Reshape', [afterAttention, g.int64s(`const_shape_flat_${l}`, [-1, hidden])]);
          const sum = g.op('Add', [flat, mlp(l, norm(flat, `${prefix}.post_attention_layernorm`))]);
          residual = g.op('Reshape', [sum, g.op('Shape', [afterAttention])]);
        } else {
          residual = g.op('Add', [afterAttention, mlp(l, norm(afterAttention, `${prefix}.post_attention_layernorm`))]);
        }
      } else {
        // GPT-NeoX: x + attn(ln1 x) + mlp(ln2 x), summed as (mlp + attn) + x; Phi shares one norm.
        const attentionNormed = norm(residual, `${prefix}.input_layernorm`);
        const mlpNormed = structure.residual === 'parallel' ? norm(residual, `${prefix}.post_attention_layernorm`) : attentionNormed;
        residual = g.op('Add', [g.op('Add', [mlp(l, mlpNormed), attention(l, attentionNormed)]), residual]);
      }
    }
    const finalNormed = norm(residual, 'model.norm');
    if (structure.lmHeadBias) {
      // Phi: an untied LM head with a bias.
      const product = g.op('MatMul', [finalNormed, weight('lm_head.weight', [hidden, vocab], hidden)]);
      g.node('Add', [product, weight('lm_head.bias', [vocab], 100)], ['logits']);
    } else {
      lmHead(finalNormed);
    }
  }

  const model = new ProtoWriter().int(1, 8).string(2, `tiller-synthetic-${flavour}`).bytes(7, g.graph.finish());
  model.message(8, (o) => o.string(1, '').int(2, 17));
  if (fp16 || q4) model.message(8, (o) => o.string(1, 'com.microsoft').int(2, 1));
  const config: Record<string, unknown> = structure !== LLAMA ? { ...familyConfig(shape, structure), bos_token_id: 1, eos_token_id: 2 } : {
    model_type: 'llama',
    architectures: ['LlamaForCausalLM'],
    hidden_size: hidden,
    intermediate_size: intermediate,
    num_hidden_layers: layers,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
    vocab_size: vocab,
    max_position_embeddings: maxPositions,
    rms_norm_eps: RMS_EPSILON,
    rope_theta: ROPE_THETA,
    tie_word_embeddings: true,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: fp16 ? 'float16' : 'float32',
    ...(fp16 ? { 'transformers.js_config': { dtype: q4 ? 'q4f16' : 'fp16', use_external_data_format: true, kv_cache_dtype: { [q4 ? 'q4f16' : 'fp16']: 'float16' } } } : {}),
    ...(!fp16 && q4 ? { 'transformers.js_config': { dtype: 'q4' } } : {}),
  };
  let externalData: SyntheticModel['externalData'];
  if (externalName) {
    const total = g.external.reduce((sum, part) => sum + part.length, 0);
    const data = new Uint8Array(total);
    let offset = 0;
    for (const part of g.external) {
      data.set(part, offset);
      offset += part.length;
    }
    externalData = { path: externalName, data };
  }
  return { file: structure.q8 ? 'onnx/model_quantized.onnx' : `onnx/${baseName}.onnx`, graph: model.finish(), externalData, config };
}

/** Writes the model into `folder` (Transformers.js layout) unless it is already there; returns the folder. */
export function writeSyntheticModel(folder: string, shape: DecoderShape, flavour: ExportFlavour | Family, seed = 1, weights: WeightFormat = 'float'): string {
  const done = path.join(folder, '.complete');
  if (existsSync(done)) return folder;
  const model = flavour === 'torch' || flavour === 'builder' ? syntheticDecoder(shape, flavour, seed, LLAMA, weights) : syntheticFamily(shape, flavour, seed);
  mkdirSync(path.join(folder, 'onnx'), { recursive: true });
  writeFileSync(path.join(folder, model.file), model.graph);
  if (model.externalData) writeFileSync(path.join(folder, 'onnx', model.externalData.path), model.externalData.data);
  writeFileSync(path.join(folder, 'config.json'), JSON.stringify(model.config, null, 2));
  writeFileSync(path.join(folder, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }, null, 2));
  writeFileSync(done, '');
  return folder;
}
