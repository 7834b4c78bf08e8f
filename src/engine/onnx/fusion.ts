/**
 * Rewrites the plain-op attention, rotary embeddings and RMSNorms of torch/Optimum exports into ONNX Runtime's
 * fused ops `com.microsoft.MultiHeadAttention`, `com.microsoft.RotaryEmbedding` and
 * `SimplifiedLayerNormalization`, which ORT Web runs on WASM and WebGPU as one kernel each.
 *
 * Attention, matched by structure from each Softmax over the last axis:
 *   scores = MatMul(Q', Transpose(K, [0,1,3,2])) · c   (Mul or Div by a constant scalar)
 *   Softmax(scores' + mask)                          (scores' = scores, or scores viewed by head)
 *   out = Reshape(Transpose(MatMul(P', V), [0,2,1,3]))  (P' = P, or P viewed by KV group)
 * where K and V are the layer's present.N.key/value (the KV cache as the graph returns it) or their
 * repeat_kv copy (Unsqueeze → Expand → Reshape), and Q' is Q `[batch, heads, seq, head_dim]` or Q viewed by
 * KV group. It becomes MultiHeadAttention(query = Q as `[batch, seq, heads·head_dim]`, key and value as
 * `[batch, heads, total, head_dim]`, attention_bias = the export's own additive mask, scale = c), writing
 * the same output tensor. The mask is the one the export adds, so left padding means what it meant.
 *
 * Rotary (matchRotary): rotate_half or interleaved pairs applied to Q or K `[batch, heads, seq, head_dim]`
 * with the export's cos and sin, which become RotaryEmbedding's caches as they are (emitRotaryCaches).
 *
 * RMSNorm (fuseRmsNorm): the norm over the last axis with a float32 weight, see matchRmsNorm.
 *
 * The KV cache outputs, residual Adds (steering edits them: SkipSimplifiedLayerNormalization would swallow
 * them) and everything else are left as they were; anything that does not match exactly is left alone.
 * Whether the result computes the same numbers is checked at load (load.ts).
 */
import type { GraphAnalysis, KvInput } from './analysis.ts';
import { type OnnxModel, type OnnxNode, TensorType, tensorLinks } from './model.ts';
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
  /** Query heads (config.json num_attention_heads); without it, the hidden size over the KV cache's head size. */
  heads?: number;
  /** Test hook: a wrong softmax scale, so that the check at load must catch the fused graph. */
  breakScale?: boolean;
}

export function planFusion(model: OnnxModel, analysis: GraphAnalysis, options: FusionOptions): FusionPlan {
  const plan: FusionPlan = { applied: [], removedNodes: new Set(), addedNodes: [], addedInitializers: [] };
  const headDim = analysis.kv[0].shape[3];
  const heads = options.heads ?? (typeof headDim === 'number' ? analysis.hiddenSize / headDim : NaN);
  if (analysis.flavour !== 'torch' || !(Number.isInteger(heads) && heads > 0)) return plan;
  const graph = new GraphIndex(model);
  const read = new Set<string>();
  fuseAttention(plan, graph, analysis.kv, heads, options.breakScale ?? false, read);
  fuseRotary(plan, graph, read);
  fuseRmsNorm(plan, graph, read);
  removeUnread(plan, graph, read);
  return plan;
}

/** Also drops what only fed the removed nodes (shape arithmetic for their Reshapes, the cos/sin views):
 *  ONNX Runtime would otherwise still run it every step. `read`: graph tensors the added nodes read. */
function removeUnread(plan: FusionPlan, graph: GraphIndex, read: Set<string>): void {
  const isRead = (name: string) => read.has(name) || graph.isGraphOutput(name) || graph.consumers(name).some((user) => !plan.removedNodes.has(user.index));
  const queue = graph.nodes.filter((node) => plan.removedNodes.has(node.index));
  while (queue.length > 0) {
    for (const input of queue.pop()!.inputs) {
      const producer = input ? graph.producer(input) : undefined;
      if (!producer || plan.removedNodes.has(producer.index) || producer.outputs.some((output) => output && isRead(output))) continue;
      plan.removedNodes.add(producer.index);
      queue.push(producer);
    }
  }
}

function fuseAttention(plan: FusionPlan, graph: GraphIndex, kv: KvInput[], heads: number, breakScale: boolean, read: Set<string>): void {
  let fused = 0;
  for (const softmax of graph.nodes.filter((node) => node.opType === 'Softmax' && node.domain === '')) {
    const match = matchAttention(graph, kv, softmax);
    if (!match || match.removed.some((node) => plan.removedNodes.has(node.index))) continue;
    if (!(match.key.repeated && match.value.repeated) && !repeatable(match.kv, heads)) continue;
    const tag = `tiller/fused_attention_${fused}`;
    const queryByToken = emitQueryByToken(plan, tag, match.query);
    const key = match.key.repeated ? match.key.tensor : emitRepeatKv(plan, tag, 'key', match.key.tensor, match.kv, heads);
    const value = match.value.repeated ? match.value.tensor : emitRepeatKv(plan, tag, 'value', match.value.tensor, match.kv, heads);
    const scale = breakScale ? match.scale * 2 : match.scale;
    plan.addedNodes.push(encodeNode('MultiHeadAttention', tag, [queryByToken, key, value, '', '', match.mask], [match.output], [
      intAttribute('num_heads', heads), floatAttribute('scale', scale),
    ], CONTRIB_DOMAIN));
    for (const node of match.removed) plan.removedNodes.add(node.index);
    for (const tensor of [match.query, match.key.tensor, match.value.tensor, match.mask]) read.add(tensor);
    fused++;
  }
  if (fused > 0) plan.applied.push(`${fused} attention block${fused === 1 ? '' : 's'} → MultiHeadAttention`);
}

function fuseRotary(plan: FusionPlan, graph: GraphIndex, read: Set<string>): void {
  const caches = new Map<string, { cos: string; sin: string }>();
  let rotated = 0;
  for (const node of graph.nodes) {
    const match = matchRotary(graph, node);
    if (!match || match.removed.some((removed) => plan.removedNodes.has(removed.index))) continue;
    const cacheKey = `${match.cos}|${match.sin}|${match.half}`;
    let cache = caches.get(cacheKey);
    if (!cache) caches.set(cacheKey, (cache = emitRotaryCaches(plan, `tiller/rotary_cache_${caches.size}`, match)));
    if (rotated === 0) plan.addedInitializers.push(encodeInt64Tensor(ROTARY_OFFSET, [0]));
    plan.addedNodes.push(encodeNode('RotaryEmbedding', `tiller/fused_rotary_${rotated}`, [match.input, ROTARY_OFFSET, cache.cos, cache.sin], [match.output], [
      intAttribute('interleaved', match.interleaved ? 1 : 0),
    ], CONTRIB_DOMAIN));
    for (const removed of match.removed) plan.removedNodes.add(removed.index);
    for (const tensor of [match.input, match.cos, match.sin]) read.add(tensor);
    rotated++;
  }
  if (rotated > 0) plan.applied.push(`${rotated} rotar${rotated === 1 ? 'y' : 'ies'} → RotaryEmbedding`);
}

/**
 * RMSNorm as transformers exports it, x · (1 / √(mean(x²) + ε)) · w over the last axis:
 *   Pow(x, 2) → ReduceMean(last axis, keepdims) → Add(ε) → Sqrt → Reciprocal or Div(1, ·) → Mul(x, ·) → Mul(w, ·)
 * becomes SimplifiedLayerNormalization(x, w), computed in float32 (stash_type 1) as the export does. Only a
 * float32 weight initializer matches: float16 exports wrap the norm in Casts, which stay as they are. Its input x
 * is a residual, which steering edits upstream (the residual Add's branch), so the fused norm reads the steered
 * residual as the plain ops did.
 */
function fuseRmsNorm(plan: FusionPlan, graph: GraphIndex, read: Set<string>): void {
  let fused = 0;
  for (const reduce of graph.nodes.filter((node) => node.opType === 'ReduceMean' && node.domain === '')) {
    const match = matchRmsNorm(graph, reduce);
    if (!match || match.removed.some((node) => plan.removedNodes.has(node.index))) continue;
    plan.addedNodes.push(encodeNode('SimplifiedLayerNormalization', `tiller/fused_rms_norm_${fused}`, [match.input, match.weight], [match.output], [
      intAttribute('axis', -1), floatAttribute('epsilon', match.epsilon), intAttribute('stash_type', 1),
    ]));
    for (const node of match.removed) plan.removedNodes.add(node.index);
    read.add(match.input).add(match.weight);
    fused++;
  }
  if (fused > 0) plan.applied.push(`${fused} RMSNorm${fused === 1 ? '' : 's'} → SimplifiedLayerNormalization`);
}

function matchRmsNorm(graph: GraphIndex, reduce: OnnxNode): { input: string; weight: string; epsilon: number; output: string; removed: OnnxNode[] } | undefined {
  const axes = reduce.inputs[1] ? graph.ints(reduce.inputs[1]) : reduce.attributes.get('axes')?.ints;
  // Over the last axis, named as -1: a positive axis would need the input's rank to mean the same.
  if (!sameInts(axes, [-1]) || (reduce.attributes.get('keepdims')?.int ?? 1) !== 1) return undefined;
  const square = graph.producer(reduce.inputs[0]);
  if (square?.domain !== '') return undefined;
  const x = square.inputs[0];
  if (!(square.opType === 'Pow' && graph.scalar(square.inputs[1]) === 2) && !(square.opType === 'Mul' && square.inputs[1] === x)) return undefined;
  const removed: OnnxNode[] = [square, reduce];
  const next = (from: OnnxNode, opType: string) => {
    const node = graph.onlyConsumer(from.outputs[0]);
    if (node?.opType !== opType || node.domain !== '') return undefined;
    removed.push(node);
    return node;
  };
  const plusEpsilon = next(reduce, 'Add');
  const epsilon = plusEpsilon && graph.scalar(plusEpsilon.inputs[plusEpsilon.inputs[0] === reduce.outputs[0] ? 1 : 0]);
  const root = plusEpsilon && next(plusEpsilon, 'Sqrt');
  if (epsilon === undefined || !(epsilon >= 0) || !root) return undefined;
  // 1 / √…: Reciprocal, or Div with a constant 1 as numerator.
  const inverse = graph.onlyConsumer(root.outputs[0]);
  if (inverse?.domain !== '' || !(inverse.opType === 'Reciprocal' || (inverse.opType === 'Div' && inverse.inputs[1] === root.outputs[0] && graph.scalar(inverse.inputs[0]) === 1))) return undefined;
  removed.push(inverse);
  const normalized = next(inverse, 'Mul');
  if (!normalized?.inputs.includes(x)) return undefined;
  const scaled = next(normalized, 'Mul');
  const weight = scaled?.inputs.find((input) => input !== normalized.outputs[0]);
  if (!scaled || !weight || !graph.isFloatVector(weight)) return undefined;
  // Pow's output feeds only the ReduceMean (the rest were checked by onlyConsumer); x may feed anything.
  if (graph.onlyConsumer(square.outputs[0]) !== reduce) return undefined;
  return { input: x, weight, epsilon, output: scaled.outputs[0], removed };
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
  // Before opset 13 Softmax's axis defaulted to 1 (and meant "flatten from there").
  const axis = softmax.attributes.get('axis')?.int ?? (graph.opset >= 13 ? -1 : 1);
  if (axis !== -1 && axis !== 3) return undefined;
  const removed: OnnxNode[] = [softmax];
  // The additive mask: one side of the Add before the Softmax; the other leads back to the scores.
  const masked = graph.producedBy(softmax.inputs[0], removed, 'Add');
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
  const product = graph.producedBy(scoresNode.inputs[1 - constantAt], removed, 'MatMul');
  if (!product) return undefined;
  const keysTransposed = graph.producedBy(product.inputs[1], removed, 'Transpose');
  if (!keysTransposed || !sameInts(keysTransposed.attributes.get('perm')?.ints, [0, 1, 3, 2])) return undefined;
  let query = product.inputs[0];
  if (headsView) {
    // Q viewed by KV group (the heads of one KV head as extra rows): the view is dropped with the rest.
    const grouped = graph.producedBy(query, removed, 'Reshape');
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

/** Whether the graph declares the KV cache's head count and size, and the query heads share KV heads evenly. */
function repeatable(kv: KvInput, heads: number): boolean {
  const [, kvHeads, , headDim] = kv.shape;
  return typeof kvHeads === 'number' && typeof headDim === 'number' && heads % kvHeads === 0;
}

/** The KV cache `[batch, kv_heads, total, head_dim]` with each KV head repeated for its query heads
 *  (head h reads KV head ⌊h / group⌋, as repeat_kv orders them). */
function emitRepeatKv(plan: FusionPlan, tag: string, kind: string, tensor: string, kv: KvInput, heads: number): string {
  const [, kvHeads, , headDim] = kv.shape as number[];
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

/** RotaryEmbedding's position_ids as one offset: position s of the step reads row s of the caches below. */
const ROTARY_OFFSET = 'tiller.rotary_offset';

interface RotaryMatch {
  /** `[batch, heads, seq, head_dim]`, and the tensor the rotation writes. */
  input: string;
  output: string;
  /** `[batch, seq, width]` cos and sin of this step's positions as the export computes them (width: half
   *  the head for interleaved pairs, the whole head for rotate_half, whose two halves are equal). */
  cos: string;
  sin: string;
  /** The columns of cos and sin that hold the angles: the first half for rotate_half, all for interleaved pairs. */
  half?: number;
  interleaved: boolean;
  removed: OnnxNode[];
}

/**
 * Rotary embedding applied to `[batch, heads, seq, head_dim]`, by one of two structures:
 *  - rotate_half (Llama in transformers): x·cos + concat(−x[half:], x[:half])·sin;
 *  - interleaved pairs (llama2.c's, as stories260K exports it): x viewed as pairs (x₀, x₁), then
 *    (x₀·cos − x₁·sin, x₀·sin + x₁·cos) stacked back;
 * where cos and sin are `[batch, 1, seq, width]`, unsqueezed from `[batch, seq, width]`.
 */
function matchRotary(graph: GraphIndex, node: OnnxNode): RotaryMatch | undefined {
  if (node.domain !== '') return undefined;
  const match = node.opType === 'Add' ? matchRotateHalf(graph, node) : node.opType === 'Reshape' ? matchInterleaved(graph, node) : undefined;
  if (!match) return undefined;
  const inside = new Set(match.removed);
  for (const removed of match.removed) {
    if (removed === node) continue;
    for (const output of removed.outputs) {
      if (graph.isGraphOutput(output) || graph.consumers(output).some((user) => !inside.has(user))) return undefined;
    }
  }
  return match;
}

/** The `[batch, seq, width]` tensor a `[batch, 1, seq, width]` one was unsqueezed from (axis 1). */
function unsqueezedAt1(graph: GraphIndex, name: string): string | undefined {
  const node = graph.producer(name);
  if (node?.opType !== 'Unsqueeze') return undefined;
  const axes = node.inputs[1] ? graph.ints(node.inputs[1]) : node.attributes.get('axes')?.ints;
  return axes && sameInts(axes, [1]) ? node.inputs[0] : undefined;
}

/** Mul(a, b) as [the operand that is `x`, the other], in either order. */
function productWith(graph: GraphIndex, name: string, x: string): [OnnxNode, string] | undefined {
  const node = graph.producer(name);
  if (node?.opType !== 'Mul' || node.domain !== '') return undefined;
  const at = node.inputs.indexOf(x);
  return at < 0 ? undefined : [node, node.inputs[1 - at]];
}

function matchRotateHalf(graph: GraphIndex, add: OnnxNode): RotaryMatch | undefined {
  for (const side of [0, 1]) {
    const concat = graph.producer(graph.producer(add.inputs[1 - side])?.inputs.find((input) => graph.producer(input)?.opType === 'Concat') ?? '');
    if (concat?.opType !== 'Concat' || concat.inputs.length !== 2) continue;
    const lastAxis = concat.attributes.get('axis')?.int;
    if (lastAxis !== -1 && lastAxis !== 3) continue;
    const negate = graph.producer(concat.inputs[0]);
    const second = negate?.opType === 'Neg' ? graph.producer(negate.inputs[0]) : undefined;
    const first = graph.producer(concat.inputs[1]);
    if (second?.opType !== 'Slice' || first?.opType !== 'Slice' || second.inputs[0] !== first.inputs[0]) continue;
    const x = first.inputs[0];
    const firstRange = sliceRange(graph, first);
    const secondRange = sliceRange(graph, second);
    if (!firstRange || !secondRange || firstRange.start !== 0 || secondRange.start !== firstRange.end || secondRange.end < 2 * firstRange.end) continue;
    const cosTerm = productWith(graph, add.inputs[side], x);
    const sinTerm = productWith(graph, add.inputs[1 - side], concat.outputs[0]);
    if (!cosTerm || !sinTerm) continue;
    const cos = unsqueezedAt1(graph, cosTerm[1]);
    const sin = unsqueezedAt1(graph, sinTerm[1]);
    if (!cos || !sin) continue;
    return {
      input: x, output: add.outputs[0], cos, sin, half: firstRange.end, interleaved: false,
      removed: [add, cosTerm[0], sinTerm[0], concat, negate!, first, second],
    };
  }
  return undefined;
}

/** A Slice along the last axis (-1 or 3) with step 1: its start and end. */
function sliceRange(graph: GraphIndex, slice: OnnxNode): { start: number; end: number } | undefined {
  const [starts, ends, axes, steps] = [1, 2, 3, 4].map((i) => (slice.inputs[i] ? graph.ints(slice.inputs[i]) : undefined));
  if (!starts || !ends || !axes || starts.length !== 1 || ends.length !== 1 || !(sameInts(axes, [-1]) || sameInts(axes, [3]))) return undefined;
  if (slice.inputs[4] && !(steps && sameInts(steps, [1]))) return undefined;
  return { start: starts[0], end: ends[0] };
}

function matchInterleaved(graph: GraphIndex, merge: OnnxNode): RotaryMatch | undefined {
  const stack = graph.producer(merge.inputs[0]);
  const stackAxis = stack?.attributes.get('axis')?.int;
  if (stack?.opType !== 'Concat' || stack.inputs.length !== 2 || (stackAxis !== -1 && stackAxis !== 4)) return undefined;
  const [firstOut, secondOut] = stack.inputs.map((input) => graph.producer(input));
  if (firstOut?.opType !== 'Unsqueeze' || secondOut?.opType !== 'Unsqueeze') return undefined;
  for (const unsqueeze of [firstOut, secondOut]) {
    const axes = unsqueeze.inputs[1] ? graph.ints(unsqueeze.inputs[1]) : unsqueeze.attributes.get('axes')?.ints;
    if (!axes || !(sameInts(axes, [-1]) || sameInts(axes, [4]))) return undefined;
  }
  const difference = graph.producer(firstOut.inputs[0]);
  const sum = graph.producer(secondOut.inputs[0]);
  if (difference?.opType !== 'Sub' || sum?.opType !== 'Add') return undefined;
  // x₀·cos − x₁·sin and x₀·sin + x₁·cos, (x₀, x₁) the Gathers of index 0 and 1 along the last axis of a view of x.
  const gatherOf = (product: string, index: number) => graph.producer(product)?.inputs.map((input) => graph.producer(input))
    .find((node) => node?.opType === 'Gather' && graph.int(node.inputs[1]) === index);
  const x0 = gatherOf(difference.inputs[0], 0);
  const x1 = gatherOf(difference.inputs[1], 1);
  if (!x0 || !x1 || x0.inputs[0] !== x1.inputs[0]) return undefined;
  for (const gather of [x0, x1]) {
    const axis = gather.attributes.get('axis')?.int ?? 0;
    if (axis !== -1 && axis !== 4) return undefined;
  }
  const pairs = graph.producer(x0.inputs[0]);
  if (pairs?.opType !== 'Reshape') return undefined;
  const x = pairs.inputs[0];
  const a = productWith(graph, difference.inputs[0], x0.outputs[0]);
  const b = productWith(graph, difference.inputs[1], x1.outputs[0]);
  const c = productWith(graph, sum.inputs[0], x0.outputs[0]);
  const d = productWith(graph, sum.inputs[1], x1.outputs[0]);
  if (!a || !b || !c || !d || a[1] !== d[1] || b[1] !== c[1]) return undefined;
  const cos = unsqueezedAt1(graph, a[1]);
  const sin = unsqueezedAt1(graph, b[1]);
  if (!cos || !sin) return undefined;
  return {
    input: x, output: merge.outputs[0], cos, sin, interleaved: true,
    removed: [merge, stack, firstOut, secondOut, difference, sum, a[0], b[0], c[0], d[0], x0, x1, pairs],
  };
}

/** RotaryEmbedding's caches `[seq, half]` from this step's cos and sin `[batch, seq, width]`: row 0 of the batch,
 *  the columns holding the angles. Tiller gives every batch row the same positions (padding counts as positions,
 *  steerable-model.ts), so row 0's angles are every row's, and the export's own values are used unchanged. */
function emitRotaryCaches(plan: FusionPlan, tag: string, match: RotaryMatch): { cos: string; sin: string } {
  plan.addedInitializers.push(encodeInt64Tensor(`${tag}.row`, [0], []));
  if (match.half !== undefined) {
    plan.addedInitializers.push(encodeInt64Tensor(`${tag}.starts`, [0]), encodeInt64Tensor(`${tag}.ends`, [match.half]), encodeInt64Tensor(`${tag}.axes`, [1]));
  }
  const cacheOf = (name: string, kind: string) => {
    const row = `${tag}.${kind}_row`;
    plan.addedNodes.push(encodeNode('Gather', `${tag}/${kind}_row`, [name, `${tag}.row`], [row], [intAttribute('axis', 0)]));
    if (match.half === undefined) return row;
    plan.addedNodes.push(encodeNode('Slice', `${tag}/${kind}`, [row, `${tag}.starts`, `${tag}.ends`, `${tag}.axes`], [`${tag}.${kind}`]));
    return `${tag}.${kind}`;
  };
  return { cos: cacheOf(match.cos, 'cos'), sin: cacheOf(match.sin, 'sin') };
}

function sameInts(a: number[] | undefined, b: number[]): boolean {
  return a !== undefined && a.length === b.length && a.every((value, i) => value === b[i]);
}

/** Producers, consumers and constant scalars of a graph. */
class GraphIndex {
  private readonly producers: Map<string, OnnxNode>;
  private readonly consumerLists: Map<string, OnnxNode[]>;
  private readonly outputs: Set<string>;
  private readonly initializers: Map<string, OnnxModel['graph']['initializers'][number]>;

  readonly nodes: OnnxNode[];
  /** The default domain's opset version. */
  readonly opset: number;

  constructor(private readonly model: OnnxModel) {
    this.nodes = model.graph.nodes;
    this.opset = model.opsets.find((entry) => entry.domain === '' || entry.domain === 'ai.onnx')?.version ?? 0;
    ({ producers: this.producers, consumers: this.consumerLists } = tensorLinks(model.graph.nodes));
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
  producedBy(name: string, removed: OnnxNode[], opType: string): OnnxNode | undefined {
    const node = this.producer(name);
    if (node?.opType !== opType || node.domain !== '') return undefined;
    removed.push(node);
    return node;
  }

  /** The values of an int64 or int32 constant (an initializer or a Constant node), if `name` is one. */
  ints(name: string): number[] | undefined {
    const tensor = this.initializers.get(name) ?? this.producer(name)?.attributes.get('value')?.tensor;
    if (!tensor?.rawData || (tensor.dataType !== TensorType.INT64 && tensor.dataType !== TensorType.INT32)) return undefined;
    const { start, end } = tensor.rawData;
    const width = tensor.dataType === TensorType.INT64 ? 8 : 4;
    const view = new DataView(this.model.bytes.buffer, this.model.bytes.byteOffset + start, end - start);
    return Array.from({ length: (end - start) / width }, (_, i) => (width === 8 ? Number(view.getBigInt64(8 * i, true)) : view.getInt32(4 * i, true)));
  }

  /** The value of a one-element integer constant. */
  int(name: string): number | undefined {
    const values = this.ints(name);
    return values?.length === 1 ? values[0] : undefined;
  }

  /** Whether `name` is a one-dimensional float32 initializer (a norm's weight). */
  isFloatVector(name: string): boolean {
    const tensor = this.initializers.get(name);
    return tensor?.dataType === TensorType.FLOAT && tensor.dims.length === 1;
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
