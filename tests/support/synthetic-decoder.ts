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
export function syntheticDecoder(shape: DecoderShape, flavour: ExportFlavour, seed = 1, weights: WeightFormat = 'float'): SyntheticModel {
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
  const randomValues = (count: number, fanIn: number) => {
    const bound = Math.sqrt(3 / fanIn);
    const values = new Float32Array(count);
    for (let i = 0; i < values.length; i++) values[i] = (random() * 2 - 1) * bound;
    return values;
  };
  const weight = (name: string, dims: number[], fanIn: number) =>
    g.initializer(name, floatType, dims, floats(randomValues(dims.reduce((a, b) => a * b, 1), fanIn)), true);
  /**
   * `input` times a [K, N] weight. q4: ONNX Runtime's MatMulNBits (com.microsoft) takes B transposed and
   * packed, uint8 [N, K/32, 16], two 4-bit codes a byte with the lower K index in the low nibble; scales
   * [N · K/32] in the activations' type; no zero_points input, so every code is read as (code − 8) · scale.
   */
  const projection = (input: string, name: string, K: number, N: number) => {
    if (!quantised) return g.op('MatMul', [input, weight(name, [K, N], K)]);
    const values = randomValues(K * N, K);
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
  const cos = g.initializer(fp16 ? 'cos_cache' : 'model.rotary_emb.cos', floatType, [maxPositions, width], floats(cosTable), true);
  const sin = g.initializer(fp16 ? 'sin_cache' : 'model.rotary_emb.sin', floatType, [maxPositions, width], floats(sinTable), true);

  const embed = weight('model.embed_tokens.weight', [vocab, hidden], hidden);
  g.io(11, 'input_ids', TensorType.INT64, ['batch_size', 'sequence_length']);
  g.io(11, 'attention_mask', TensorType.INT64, ['batch_size', 'total_sequence_length']);
  if (!fp16) g.io(11, 'position_ids', TensorType.INT64, ['batch_size', 'sequence_length']);
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
    const gate = projection(normed, `model.layers.${l}.mlp.gate_proj.weight`, hidden, intermediate);
    const up = projection(normed, `model.layers.${l}.mlp.up_proj.weight`, hidden, intermediate);
    const silu = g.op('Mul', [gate, g.op('Sigmoid', [gate])]);
    return projection(g.op('Mul', [silu, up]), `model.layers.${l}.mlp.down_proj.weight`, intermediate, hidden);
  };
  const projections = (l: number, normed: string) => ({
    q: projection(normed, `model.layers.${l}.self_attn.q_proj.weight`, hidden, hidden),
    k: projection(normed, `model.layers.${l}.self_attn.k_proj.weight`, hidden, kvHeads * headDim),
    v: projection(normed, `model.layers.${l}.self_attn.v_proj.weight`, hidden, kvHeads * headDim),
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
      const out = projection(attention, `model.layers.${l}.self_attn.o_proj.weight`, hidden, hidden);
      const post = skipNorm(residual, out, ones(`model.layers.${l}.post_attention_layernorm.weight`), false);
      const last = l === layers - 1;
      const next = skipNorm(post.residual!, mlp(l, post.normed), ones(last ? 'model.norm.weight' : `model.layers.${l + 1}.input_layernorm.weight`), last);
      normed = next.normed;
      residual = next.residual!;
    }
    lmHead(normed);
  } else {
    // torch: causal + padding mask [batch, 1, seq, total] from position_ids and attention_mask.
    const queryPositions = g.op('Unsqueeze', ['position_ids', g.int64s('const_axes_1_3', [1, 3])]);
    const totalLength = g.op('Gather', [g.op('Shape', ['attention_mask']), one], (a) => a.int('axis', 0));
    const keyPositions = g.op('Range', [g.int64s('const_zero', [0], true), totalLength, one]);
    const causal = g.op('LessOrEqual', [keyPositions, queryPositions]);
    const padding = g.op('Cast', [g.op('Unsqueeze', ['attention_mask', g.int64s('const_axes_1_2', [1, 2])])], (a) => a.int('to', TensorType.BOOL));
    const mask = g.op('Where', [g.op('And', [causal, padding]), scalar('const_mask_keep', 0), scalar('const_mask_drop', -3.4028234663852886e38)]);
    const cosRows = g.op('Unsqueeze', [g.op('Gather', [cos, 'position_ids']), axis1]);
    const sinRows = g.op('Unsqueeze', [g.op('Gather', [sin, 'position_ids']), axis1]);
    const two = scalar('const_two', 2);
    const epsilon = scalar('const_epsilon', RMS_EPSILON);
    const lastAxis = g.int64s('const_axis_last', [3]);
    const rmsNorm = (x: string, gamma: string) => {
      const meanSquare = g.op('ReduceMean', [g.op('Pow', [x, two])], (a) => a.ints('axes', [-1]).int('keepdims', 1));
      return g.op('Mul', [gamma, g.op('Mul', [x, g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [meanSquare, epsilon])])])])]);
    };
    const queryHeadsShape = g.int64s('const_shape_query_heads', [0, 0, heads, headDim]);
    const kvHeadsShape = g.int64s('const_shape_kv_heads', [0, 0, kvHeads, headDim]);
    const splitHeads = (x: string, shape: string) => g.op('Transpose', [g.op('Reshape', [x, shape])], (a) => a.ints('perm', [0, 2, 1, 3]));
    const [start, middle, end] = [g.int64s('const_zero_1d', [0]), g.int64s('const_half', [half]), g.int64s('const_head_dim', [headDim])];
    const rotary = (x: string) => {
      const first = g.op('Slice', [x, start, middle, lastAxis]);
      const second = g.op('Slice', [x, middle, end, lastAxis]);
      const rotated = g.op('Concat', [g.op('Neg', [second]), first], (a) => a.int('axis', -1));
      return g.op('Add', [g.op('Mul', [x, cosRows]), g.op('Mul', [rotated, sinRows])]);
    };
    const groupShape = g.int64s('const_shape_kv_groups', [0, kvHeads, -1, headDim]);
    const scoresByHead = g.int64s('const_shape_scores_heads', [0, heads, -1, 0]);
    const scoresByGroup = g.int64s('const_shape_scores_groups', [0, kvHeads, -1, 0]);
    const headsShape = g.int64s('const_shape_heads_out', [0, heads, -1, headDim]);
    const mergeShape = g.int64s('const_shape_merge', [0, 0, hidden]);
    const scale = scalar('const_attention_scale', 1 / Math.sqrt(headDim));
    let residual = embedded;
    for (let l = 0; l < layers; l++) {
      const { q, k, v } = projections(l, rmsNorm(residual, ones(`model.layers.${l}.input_layernorm.weight`)));
      const keys = g.node('Concat', [`past_key_values.${l}.key`, rotary(splitHeads(k, kvHeadsShape))], [`present.${l}.key`], (a) => a.int('axis', 2))[0];
      const values = g.node('Concat', [`past_key_values.${l}.value`, splitHeads(v, kvHeadsShape)], [`present.${l}.value`], (a) => a.int('axis', 2))[0];
      // Grouped-query attention without repeating K/V: the query heads of one KV head become extra rows.
      const grouped = g.op('Reshape', [rotary(splitHeads(q, queryHeadsShape)), groupShape]);
      const scores = g.op('Mul', [g.op('MatMul', [grouped, g.op('Transpose', [keys], (a) => a.ints('perm', [0, 1, 3, 2]))]), scale]);
      const masked = g.op('Add', [g.op('Reshape', [scores, scoresByHead]), mask]);
      const weights = g.op('Reshape', [g.op('Softmax', [masked], (a) => a.int('axis', -1)), scoresByGroup]);
      const context = g.op('Reshape', [g.op('MatMul', [weights, values]), headsShape]);
      const merged = g.op('Reshape', [g.op('Transpose', [context], (a) => a.ints('perm', [0, 2, 1, 3])), mergeShape]);
      const attention = projection(merged, `model.layers.${l}.self_attn.o_proj.weight`, hidden, hidden);
      const afterAttention = g.op('Add', [residual, attention]);
      residual = g.op('Add', [afterAttention, mlp(l, rmsNorm(afterAttention, ones(`model.layers.${l}.post_attention_layernorm.weight`)))]);
    }
    lmHead(rmsNorm(residual, ones('model.norm.weight')));
  }

  const model = new ProtoWriter().int(1, 8).string(2, `tiller-synthetic-${flavour}`).bytes(7, g.graph.finish());
  model.message(8, (o) => o.string(1, '').int(2, 17));
  if (fp16 || q4) model.message(8, (o) => o.string(1, 'com.microsoft').int(2, 1));
  const config: Record<string, unknown> = {
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
  return { file: `onnx/${baseName}.onnx`, graph: model.finish(), externalData, config };
}

/** Writes the model into `folder` (Transformers.js layout) unless it is already there; returns the folder. */
export function writeSyntheticModel(folder: string, shape: DecoderShape, flavour: ExportFlavour, seed = 1, weights: WeightFormat = 'float'): string {
  const done = path.join(folder, '.complete');
  if (existsSync(done)) return folder;
  const model = syntheticDecoder(shape, flavour, seed, weights);
  mkdirSync(path.join(folder, 'onnx'), { recursive: true });
  writeFileSync(path.join(folder, model.file), model.graph);
  if (model.externalData) writeFileSync(path.join(folder, 'onnx', model.externalData.path), model.externalData.data);
  writeFileSync(path.join(folder, 'config.json'), JSON.stringify(model.config, null, 2));
  writeFileSync(path.join(folder, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }, null, 2));
  writeFileSync(done, '');
  return folder;
}
