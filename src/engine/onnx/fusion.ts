/**
 * Rewrites the plain-op attention of torch/Optimum exports into ONNX Runtime's contrib
 * `com.microsoft.MultiHeadAttention`, which ORT Web runs on WASM and WebGPU as one kernel.
 *
 * Matched by structure from each Softmax over the last axis:
 *   scores = MatMul(Q', Transpose(K, [0,1,3,2])) · c   (Mul or Div by a constant scalar)
 *   Softmax(scores' + mask)                          (scores' = scores, or scores viewed by head)
 *   out = Reshape(Transpose(MatMul(P', V), [0,2,1,3]))  (P' = P, or P viewed by KV group)
 * where K and V are the layer's present.N.key/value (the KV cache as the graph returns it) or their
 * repeat_kv copy (Unsqueeze → Expand → Reshape), and Q' is Q `[batch, heads, seq, head_dim]` or Q viewed by
 * KV group. It becomes MultiHeadAttention(query = Q as `[batch, seq, heads·head_dim]`, key and value as
 * `[batch, heads, total, head_dim]`, attention_bias = the export's own additive mask, scale = c), writing
 * the same output tensor. The mask is the one the export adds, so left padding means what it meant.
 * The KV cache outputs, residual Adds and everything else are left as they were; anything that does not
 * match exactly is left alone. Whether the result computes the same numbers is checked at load (load.ts).
 */
import type { GraphAnalysis, KvInput } from './analysis.ts';
import { type OnnxModel, type OnnxNode, TensorType } from './model.ts';
import { encodeInt64Tensor, encodeNode, floatAttribute, intAttribute, intsAttribute } from './surgery.ts';

export const CONTRIB_DOMAIN = 'com.microsoft';

/** Graph edits that replace matched subgraphs with contrib ops, to merge into the instrumenting edit. */
export interface FusionPlan {
  /** What was fused, for people: "5 attention blocks → MultiHeadAttention". Empty when nothing matched. */
  applied: string[];
  removedNodes: Set<number>;
  addedNodes: Uint8Array[];
  addedInitializers: Uint8Array[];
}

export interface FusionOptions {
  /** Query heads (config.json num_attention_heads). */
  heads: number;
  /** Test hook: a wrong softmax scale, so that the check at load must catch the fused graph. */
  breakScale?: boolean;
}

export function planFusion(model: OnnxModel, analysis: GraphAnalysis, options: FusionOptions): FusionPlan {
  const plan: FusionPlan = { applied: [], removedNodes: new Set(), addedNodes: [], addedInitializers: [] };
  if (analysis.flavour !== 'torch' || !(options.heads > 0)) return plan;
  const graph = new GraphIndex(model);
  let fused = 0;
  for (const softmax of model.graph.nodes.filter((node) => node.opType === 'Softmax' && node.domain === '')) {
    const match = matchAttention(graph, analysis.kv, softmax);
    if (!match || match.removed.some((node) => plan.removedNodes.has(node.index))) continue;
    const tag = `tiller/fused_attention_${fused}`;
    const heads = options.heads;
    const queryByToken = emitQueryByToken(plan, tag, match.query);
    const key = match.key.repeated ? match.key.tensor : emitRepeatKv(plan, tag, 'key', match.key.tensor, match.kv, heads);
    const value = match.value.repeated ? match.value.tensor : emitRepeatKv(plan, tag, 'value', match.value.tensor, match.kv, heads);
    if (!key || !value) continue;
    const scale = options.breakScale ? match.scale * 2 : match.scale;
    plan.addedNodes.push(encodeNode('MultiHeadAttention', tag, [queryByToken, key, value, '', '', match.mask], [match.output], [
      intAttribute('num_heads', heads), floatAttribute('scale', scale),
    ], CONTRIB_DOMAIN));
    for (const node of match.removed) plan.removedNodes.add(node.index);
    fused++;
  }
  if (fused > 0) plan.applied.push(`${fused} attention block${fused === 1 ? '' : 's'} → MultiHeadAttention`);
  return plan;
}

interface AttentionMatch {
  kv: KvInput;
  /** `[batch, heads, seq, head_dim]`. */
  query: string;
  key: { tensor: string; repeated: boolean };
  value: { tensor: string; repeated: boolean };
  mask: string;
  scale: number;
  /** The `[batch, seq, hidden]` tensor the attention writes (o_proj's input). */
  output: string;
  removed: OnnxNode[];
}

function matchAttention(graph: GraphIndex, kv: KvInput[], softmax: OnnxNode): AttentionMatch | undefined {
  const axis = softmax.attributes.get('axis')?.int ?? -1;
  if (axis !== -1 && axis !== 3) return undefined;
  const removed: OnnxNode[] = [softmax];
  // The additive mask: one side of the Add before the Softmax; the other leads back to the scores.
  const masked = graph.only(softmax.inputs[0], removed, 'Add');
  if (!masked) return undefined;
  let mask: string | undefined;
  let scoresNode: OnnxNode | undefined;
  let headsView: OnnxNode | undefined;
  for (const side of [0, 1]) {
    let producer = graph.producer(masked.inputs[side]);
    const view = producer?.opType === 'Reshape' ? producer : undefined;
    if (view) producer = graph.producer(view.inputs[0]);
    if ((producer?.opType === 'Mul' || producer?.opType === 'Div') && producer.domain === '') {
      scoresNode = producer;
      headsView = view;
      mask = masked.inputs[1 - side];
      break;
    }
  }
  if (!scoresNode || !mask || graph.isConstant(mask)) return undefined;
  removed.push(...(headsView ? [headsView] : []), scoresNode);
  // scores · c or scores / c with c a constant scalar.
  const constantAt = scoresNode.opType === 'Div' ? 1 : scoresNode.inputs.findIndex((input) => graph.scalar(input) !== undefined);
  const c = constantAt >= 0 ? graph.scalar(scoresNode.inputs[constantAt]) : undefined;
  if (c === undefined || c === 0) return undefined;
  const scale = scoresNode.opType === 'Div' ? 1 / c : c;
  const product = graph.only(scoresNode.inputs[1 - constantAt], removed, 'MatMul');
  if (!product) return undefined;
  const keysTransposed = graph.only(product.inputs[1], removed, 'Transpose');
  if (!keysTransposed || !sameInts(keysTransposed.attributes.get('perm')?.ints, [0, 1, 3, 2])) return undefined;
  let query = product.inputs[0];
  if (headsView) {
    // Q viewed by KV group (the heads of one KV head as extra rows): the view is dropped with the rest.
    const grouped = graph.only(query, removed, 'Reshape');
    if (!grouped) return undefined;
    query = grouped.inputs[0];
  }

  // P · V, then heads back beside each other: [batch, seq, heads · head_dim].
  const weights = graph.onlyConsumer(softmax.outputs[0]);
  const byGroup = weights?.opType === 'Reshape' ? weights : undefined;
  if (Boolean(headsView) !== Boolean(byGroup)) return undefined;
  if (byGroup) removed.push(byGroup);
  const context = graph.onlyConsumer(byGroup ? byGroup.outputs[0] : softmax.outputs[0]);
  if (context?.opType !== 'MatMul' || context.inputs[0] !== (byGroup ?? softmax).outputs[0]) return undefined;
  removed.push(context);
  let next = graph.onlyConsumer(context.outputs[0]);
  if (next?.opType === 'Reshape' && next.inputs[0] === context.outputs[0]) {
    removed.push(next);
    next = graph.onlyConsumer(next.outputs[0]);
  }
  if (next?.opType !== 'Transpose' || !sameInts(next.attributes.get('perm')?.ints, [0, 2, 1, 3])) return undefined;
  removed.push(next);
  const merge = graph.onlyConsumer(next.outputs[0]);
  if (merge?.opType !== 'Reshape' || merge.inputs[0] !== next.outputs[0]) return undefined;
  removed.push(merge);

  const key = cacheTensor(graph, keysTransposed.inputs[0], kv, 'key');
  const value = cacheTensor(graph, context.inputs[1], kv, 'value');
  if (!key || !value || key.kv !== value.kv) return undefined;
  // Every removed intermediate feeds only the removed nodes, and none is a graph output.
  const removedSet = new Set(removed);
  for (const node of removed) {
    if (node === merge) continue;
    for (const output of node.outputs) {
      if (graph.isGraphOutput(output) || graph.consumers(output).some((user) => !removedSet.has(user))) return undefined;
    }
  }
  return {
    kv: key.kv, query, key: { tensor: key.tensor, repeated: key.repeated }, value: { tensor: value.tensor, repeated: value.repeated },
    mask, scale, output: merge.outputs[0], removed,
  };
}

/** A layer's present.N.key/value, or its repeat_kv copy (Unsqueeze → Expand → Reshape of it). */
function cacheTensor(graph: GraphIndex, tensor: string, kv: KvInput[], kind: 'key' | 'value') {
  const output = (entry: KvInput) => (kind === 'key' ? entry.keyOutput : entry.valueOutput);
  const direct = kv.find((entry) => output(entry) === tensor);
  if (direct) return { kv: direct, tensor, repeated: false };
  const reshape = graph.producer(tensor);
  const expand = reshape?.opType === 'Reshape' ? graph.producer(reshape.inputs[0]) : undefined;
  const unsqueeze = expand?.opType === 'Expand' ? graph.producer(expand.inputs[0]) : undefined;
  const source = unsqueeze?.opType === 'Unsqueeze' ? kv.find((entry) => output(entry) === unsqueeze.inputs[0]) : undefined;
  return source ? { kv: source, tensor, repeated: true } : undefined;
}

/** Q `[batch, heads, seq, head_dim]` as MultiHeadAttention's query, `[batch, seq, heads · head_dim]`. */
function emitQueryByToken(plan: FusionPlan, tag: string, query: string): string {
  const shape = `${tag}.query_shape`;
  plan.addedInitializers.push(encodeInt64Tensor(shape, [0, 0, -1]));
  plan.addedNodes.push(
    encodeNode('Transpose', `${tag}/query_by_token`, [query], [`${tag}.query_by_token`], [intsAttribute('perm', [0, 2, 1, 3])]),
    encodeNode('Reshape', `${tag}/query_merged`, [`${tag}.query_by_token`, shape], [`${tag}.query`]),
  );
  return `${tag}.query`;
}

/** The KV cache `[batch, kv_heads, total, head_dim]` with each KV head repeated for its query heads
 *  (head h reads KV head ⌊h / group⌋, as repeat_kv orders them), or undefined when the sizes are unknown. */
function emitRepeatKv(plan: FusionPlan, tag: string, kind: string, tensor: string, kv: KvInput, heads: number): string | undefined {
  const [, kvHeads, , headDim] = kv.shape;
  if (typeof kvHeads !== 'number' || typeof headDim !== 'number' || heads % kvHeads !== 0) return undefined;
  if (kvHeads === heads) return tensor;
  const name = `${tag}.${kind}`;
  plan.addedInitializers.push(
    encodeInt64Tensor(`${name}_axis`, [2]),
    encodeInt64Tensor(`${name}_groups`, [1, 1, heads / kvHeads, 1, 1]),
    encodeInt64Tensor(`${name}_heads_shape`, [0, heads, -1, headDim]),
  );
  plan.addedNodes.push(
    encodeNode('Unsqueeze', `${tag}/${kind}_unsqueeze`, [tensor, `${name}_axis`], [`${name}_unsqueezed`]),
    encodeNode('Expand', `${tag}/${kind}_expand`, [`${name}_unsqueezed`, `${name}_groups`], [`${name}_expanded`]),
    encodeNode('Reshape', `${tag}/${kind}_repeat`, [`${name}_expanded`, `${name}_heads_shape`], [`${name}_repeated`]),
  );
  return `${name}_repeated`;
}

function sameInts(a: number[] | undefined, b: number[]): boolean {
  return a !== undefined && a.length === b.length && a.every((value, i) => value === b[i]);
}

/** Producers, consumers and constant scalars of a graph. */
class GraphIndex {
  private readonly producers = new Map<string, OnnxNode>();
  private readonly consumerLists = new Map<string, OnnxNode[]>();
  private readonly outputs: Set<string>;
  private readonly initializers: Map<string, OnnxModel['graph']['initializers'][number]>;

  constructor(private readonly model: OnnxModel) {
    for (const node of model.graph.nodes) {
      for (const output of node.outputs) if (output) this.producers.set(output, node);
      for (const input of node.inputs) {
        if (!input) continue;
        let list = this.consumerLists.get(input);
        if (!list) this.consumerLists.set(input, (list = []));
        if (!list.includes(node)) list.push(node);
      }
    }
    this.outputs = new Set(model.graph.outputs.map((output) => output.name));
    this.initializers = new Map(model.graph.initializers.map((tensor) => [tensor.name, tensor]));
  }

  producer(name: string): OnnxNode | undefined {
    return this.producers.get(name);
  }

  consumers(name: string): OnnxNode[] {
    return this.consumerLists.get(name) ?? [];
  }

  onlyConsumer(name: string): OnnxNode | undefined {
    const users = this.consumers(name);
    return users.length === 1 && !this.outputs.has(name) ? users[0] : undefined;
  }

  isGraphOutput(name: string): boolean {
    return this.outputs.has(name);
  }

  isConstant(name: string): boolean {
    return this.initializers.has(name) || this.producer(name)?.opType === 'Constant';
  }

  /** The plain-domain producer of `name` if it is an `opType`, recorded as removed. */
  only(name: string, removed: OnnxNode[], opType: string): OnnxNode | undefined {
    const node = this.producer(name);
    if (node?.opType !== opType || node.domain !== '') return undefined;
    removed.push(node);
    return node;
  }

  /** The value of a float32 scalar constant (an initializer or a Constant node), if `name` is one. */
  scalar(name: string): number | undefined {
    const tensor = this.initializers.get(name) ?? this.producer(name)?.attributes.get('value')?.tensor;
    if (!tensor || tensor.dataType !== TensorType.FLOAT || tensor.dims.reduce((a, b) => a * b, 1) !== 1 || !tensor.rawData) return undefined;
    const { start, end } = tensor.rawData;
    if (end - start !== 4) return undefined;
    const bytes = this.model.bytes;
    return new DataView(bytes.buffer, bytes.byteOffset + start, 4).getFloat32(0, true);
  }
}
