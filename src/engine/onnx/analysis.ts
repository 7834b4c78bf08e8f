/**
 * Finds the residual stream of a decoder graph by structure, not by node names: from the token
 * embedding (plus learned position embeddings, where there are some), follow the chain of residual
 * additions (plain `Add`s, through `Cast`s and `Reshape`s, in torch/Optimum exports;
 * `Skip*LayerNormalization` output 3 in onnxruntime-genai builder and ORT-fused exports). Two additions
 * make one layer, or one where attention and MLP are summed in parallel (GPT-NeoX, Phi). Anything it
 * cannot account for is refused with what it found.
 */
import { type OnnxModel, type OnnxNode, type OnnxValueInfo, type Dim, TensorType, typeName, externalDataFiles, tensorLinks } from './model.ts';

export type Flavour = 'torch' | 'fused';

/** Where the residual after one decoder layer is made, and how to reach its branch input. */
export interface LayerSite {
  layer: number;
  /** The node whose result is the residual after this layer: an Add or a Skip*LayerNormalization. */
  node: OnnxNode;
  /** Input index of that node carrying the residual from before this sub-block. */
  residualInput: number;
  /** Input index of that node carrying the block's branch (MLP output): steering is added here. */
  branchInput: number;
  /** Tensor holding the residual after this layer, or undefined where the graph never materialises it
   *  (the fused final norm, which has no output 3). */
  residual: string | undefined;
  /** Element type (ONNX TensorProto.DataType) of the residual at this layer. */
  elemType: number;
  /** The addition works on a reshaped view of the residual (OPT's MLP: `[batch·seq, hidden]`): steering
   *  views the branch as `[batch, seq, hidden]` (the embedding's shape) and back. */
  flattened: boolean;
}

export interface KvInput {
  layer: number;
  keyInput: string;
  valueInput: string;
  keyOutput: string;
  valueOutput: string;
  elemType: number;
  /** [batch, kv heads, past length, head dim] as declared; numbers where the graph fixes them. */
  shape: Dim[];
}

export interface GraphInputInfo {
  name: string;
  elemType: number;
}

export interface GraphAnalysis {
  flavour: Flavour;
  /** 'sequential': x + attn, then + mlp (two additions a layer); 'parallel': x + (attn + mlp), one. */
  residualLayout: 'sequential' | 'parallel';
  /** The embedding lookup's output, `[batch, seq, hidden]`: its shape unflattens flattened branches. */
  embeddingOutput: string;
  /** Why the rows of a batch are not independent in this graph (an op taking statistics over the whole
   *  batch, such as per-tensor dynamic quantisation), or undefined when they are. */
  rowsCoupled?: string;
  layerCount: number;
  hiddenSize: number;
  /** Element type of the residual stream (the last layer's; layers rarely differ). */
  residualType: number;
  layers: LayerSite[];
  inputIds: GraphInputInfo;
  attentionMask?: GraphInputInfo;
  positionIds?: GraphInputInfo;
  numLogitsToKeep?: GraphInputInfo;
  kv: KvInput[];
  logits: string;
  /** The LM head and the input it reads (the final norm's output, `[batch, seq, hidden]`), when the logits
   *  come from a matrix product through position-wise ops only: slicing its input to the last position
   *  spares computing logits for every prompt token. */
  lmHead?: { node: OnnxNode; input: string };
  externalDataFiles: string[];
}

export class UnsupportedGraphError extends Error {}

export interface AnalysisHints {
  /** From config.json, when there is one: used to cross-check and where the graph cannot tell. */
  numHiddenLayers?: number;
  hiddenSize?: number;
  /** Name for messages (default: the name the model was parsed as). */
  fileName?: string;
}

const PAST_RE = /^past_key_values\.(\d+)\.(key|value)$/;
const PRESENT_RE = /^present(?:_key_values)?\.(\d+)\.(key|value)$/;
const SKIP_NORMS = new Set(['SkipLayerNormalization', 'SkipSimplifiedLayerNormalization']);
const KNOWN_INPUTS = new Set(['input_ids', 'attention_mask', 'position_ids', 'num_logits_to_keep', 'logits_to_keep']);

/** Tensors fixed before any input arrives: initializers, Constant nodes, and whatever is computed from them
 *  alone (weights reshaped, transposed or cast on the fly: tied embeddings read the LM head that way). */
function constantTensors(nodes: OnnxNode[], initializers: string[]): Set<string> {
  const constants = new Set(initializers);
  for (let changed = true; changed; ) {
    changed = false;
    for (const node of nodes) {
      if (constants.has(node.outputs[0])) continue;
      const inputs = node.inputs.filter(Boolean);
      if (node.opType === 'Constant' || (inputs.length > 0 && inputs.every((i) => constants.has(i)))) {
        for (const output of node.outputs) if (output) constants.add(output);
        changed = true;
      }
    }
  }
  return constants;
}

export function analyseGraph(model: OnnxModel, hints: AnalysisHints = {}): GraphAnalysis {
  const { graph } = model;
  const fileName = hints.fileName ?? model.fileName;
  const { producers, consumers } = tensorLinks(graph.nodes);
  const constants = constantTensors(graph.nodes, graph.initializers.map((t) => t.name));
  const consumersOf = (name: string) => consumers.get(name) ?? [];

  const inputsByName = new Map(graph.inputs.map((i) => [i.name, i]));
  const inputIds = inputsByName.get('input_ids');
  if (!inputIds) {
    throw new UnsupportedGraphError(
      `${fileName} has no input_ids input (inputs: ${graph.inputs.map((i) => i.name).join(', ')}). ` +
        'Tiller steers decoder-only language models exported for Transformers.js (inputs input_ids, attention_mask, past_key_values.N.key/value).',
    );
  }
  const kv = findKv(graph.inputs, graph.outputs.map((o) => o.name), fileName);
  if (hints.numHiddenLayers !== undefined && hints.numHiddenLayers !== kv.length) {
    throw new UnsupportedGraphError(
      `config.json says num_hidden_layers = ${hints.numHiddenLayers} but ${fileName} has past_key_values for ${kv.length} layers: ` +
        'the config does not belong to this graph. Use the config.json published with this model.',
    );
  }

  const initializerDims = new Map(graph.initializers.map((t) => [t.name, t.dims]));
  const embedding = findEmbedding(graph.nodes, consumersOf, constants, initializerDims, fileName);
  const types = new TypeResolver(model, producers);

  // Step over what sits between the lookup and layer 0: casts, dequantisation of int8 tables (q8 exports),
  // scaling by a constant (Gemma multiplies by sqrt(hidden)), and additions of what does not depend on
  // the token embedding (learned position embeddings: GPT-2, OPT).
  let current = embedding.output;
  for (;;) {
    const users = consumersOf(current).filter((n) => n.opType !== 'Shape');
    const only = users.length === 1 ? users[0] : undefined;
    const other = only?.inputs.find((i) => i !== current);
    const scales = only?.opType === 'Mul' && other !== undefined && constants.has(other);
    const positions = only?.opType === 'Add' && other !== undefined && !forwardReachable(current, consumersOf).has(other);
    if (!only || !(only.opType === 'Cast' || only.opType === 'DequantizeLinear' || scales || positions)) break;
    current = only.outputs[0];
  }

  const steps: Omit<LayerSite, 'layer'>[] = [];
  let flavour: Flavour | undefined;
  for (;;) {
    const step = nextResidualStep(current, consumersOf, constants);
    if (!step) break;
    const fused = SKIP_NORMS.has(step.node.opType);
    flavour ??= fused ? 'fused' : 'torch';
    const residual = fused ? step.node.outputs[3] || undefined : step.node.outputs[0];
    const elemType = types.typeOf(step.node.inputs[step.residualInput]);
    steps.push({ ...step, residual, elemType });
    if (!residual) break;
    current = residual;
  }
  // Walking on past 2 per layer catches graphs with more additions per layer than this reading assumes.

  // Parallel layers add one branch that is itself a sum (attention + MLP); anything else needs two a layer.
  const isSum = (name: string) => {
    const node = producers.get(name);
    return node?.opType === 'Add' && node.inputs.length === 2 && node.inputs.every((i) => !constants.has(i));
  };
  const parallel = flavour === 'torch' && steps.length === kv.length && steps.every((step) => isSum(step.node.inputs[step.branchInput]));
  if ((steps.length !== 2 * kv.length && !parallel) || !flavour) {
    const hasSubgraphs = graph.nodes.some((n) => [...n.attributes.values()].some((a) => a.hasGraph));
    throw new UnsupportedGraphError(
      `${fileName}: found ${steps.length} residual additions after the embedding (${embedding.node.opType} of input_ids), ` +
        `expected 2 per layer for the ${kv.length} layers that past_key_values declares ` +
        `(or 1 whose branch sums attention and MLP, for parallel layers); ` +
        `the walk stopped at "${current}", read by ${describeConsumers(consumersOf(current))}. ` +
        (hasSubgraphs
          ? 'The graph keeps its layers inside If/Loop subgraphs (an old "merged" decoder export), which cannot be steered: use the plain model.onnx export instead.'
          : 'Tiller recognises residual Adds (torch/Optimum exports) and Skip(Simplified)LayerNormalization (onnxruntime-genai builder and ORT-optimised exports).'),
    );
  }
  const layers: LayerSite[] = [];
  const perLayer = parallel ? 1 : 2;
  for (let layer = 0; layer < kv.length; layer++) layers.push({ layer, ...steps[perLayer * layer + perLayer - 1] });
  if (layers.slice(0, -1).some((site) => !site.residual)) {
    throw new UnsupportedGraphError(`${fileName}: a Skip*LayerNormalization inside the layer stack has no residual output (output 3).`);
  }

  const hiddenSize = embedding.hiddenSize ?? hints.hiddenSize;
  if (!hiddenSize) {
    throw new UnsupportedGraphError(`${fileName}: cannot tell the hidden size from the embedding; pass config.json (hidden_size).`);
  }
  if (hints.hiddenSize !== undefined && embedding.hiddenSize !== undefined && hints.hiddenSize !== embedding.hiddenSize) {
    throw new UnsupportedGraphError(
      `config.json says hidden_size = ${hints.hiddenSize} but the embedding in ${fileName} is ${embedding.hiddenSize} wide: ` +
        'the config does not belong to this graph.',
    );
  }
  const residualType = layers[layers.length - 1].elemType;
  for (const site of layers) {
    if (site.elemType !== TensorType.FLOAT && site.elemType !== TensorType.FLOAT16) {
      throw new UnsupportedGraphError(`${fileName}: the residual after layer ${site.layer} is ${typeName(site.elemType)}; Tiller steers float32 and float16 residuals.`);
    }
  }

  const unknownInputs = graph.inputs.map((i) => i.name).filter((name) => !KNOWN_INPUTS.has(name) && !PAST_RE.test(name));
  if (unknownInputs.length > 0) {
    throw new UnsupportedGraphError(
      `${fileName} has inputs Tiller does not know how to feed: ${unknownInputs.join(', ')}. ` +
        `It feeds ${[...KNOWN_INPUTS].join(', ')} and past_key_values.N.key/value.`,
    );
  }
  const optional = (name: string) => {
    const info = inputsByName.get(name);
    return info ? { name, elemType: info.elemType ?? TensorType.INT64 } : undefined;
  };
  const numLogitsToKeep = optional('num_logits_to_keep') ?? optional('logits_to_keep');
  const logits = graph.outputs.find((o) => o.name === 'logits')?.name;
  if (!logits) throw new UnsupportedGraphError(`${fileName} has no logits output (outputs: ${graph.outputs.map((o) => o.name).join(', ')}).`);

  return {
    lmHead: numLogitsToKeep ? undefined : findLmHead(logits, producers, constants),
    flavour,
    residualLayout: parallel ? 'parallel' : 'sequential',
    embeddingOutput: embedding.output,
    rowsCoupled: rowCoupling(graph.nodes, constants),
    layerCount: kv.length,
    hiddenSize,
    residualType,
    layers,
    inputIds: { name: 'input_ids', elemType: inputIds.elemType ?? TensorType.INT64 },
    attentionMask: optional('attention_mask'),
    positionIds: optional('position_ids'),
    numLogitsToKeep,
    kv,
    logits,
    externalDataFiles: externalDataFiles(model),
  };
}

const LM_HEADS = new Set(['MatMul', 'MatMulNBits', 'Gemm']);

function findLmHead(logits: string, producers: Map<string, OnnxNode>, constants: Set<string>) {
  let node = producers.get(logits);
  // Casts, a bias (Phi) and logit soft-capping (tanh, scaling by constants) act per position: step back over them.
  while (node && !LM_HEADS.has(node.opType)) {
    const computed = node.inputs.filter((i) => i && !constants.has(i));
    const positionWise = node.opType === 'Cast' || node.opType === 'Tanh' ||
      (['Mul', 'Div', 'Add'].includes(node.opType) && computed.length === 1 && (node.opType !== 'Div' || computed[0] === node.inputs[0]));
    node = positionWise ? producers.get(computed[0]) : undefined;
  }
  return node ? { node, input: node.inputs[0] } : undefined;
}

/** Ops whose result for one row depends on the other rows of the batch. */
function rowCoupling(nodes: OnnxNode[], constants: Set<string>): string | undefined {
  const coupling = new Map<string, number>();
  for (const node of nodes) {
    if (constants.has(node.outputs[0])) continue;
    const reducesAll = node.opType.startsWith('Reduce') && !node.attributes.has('axes') && !node.inputs[1] &&
      (node.attributes.get('noop_with_empty_axes')?.int ?? 0) === 0;
    const perTensor = node.opType === 'DynamicQuantizeLinear' || node.opType === 'DynamicQuantizeMatMul';
    if (perTensor || reducesAll) coupling.set(node.opType, (coupling.get(node.opType) ?? 0) + 1);
  }
  if (coupling.size === 0) return undefined;
  const quantised = coupling.has('DynamicQuantizeLinear') || coupling.has('DynamicQuantizeMatMul');
  return `${[...coupling].map(([op, count]) => `${count} × ${op}`).join(', ')} take one statistic over the whole batch` +
    (quantised ? ' (per-tensor dynamic quantisation)' : '');
}

function describeConsumers(nodes: OnnxNode[]): string {
  if (nodes.length === 0) return 'nothing';
  const counts = new Map<string, number>();
  for (const node of nodes) counts.set(node.opType, (counts.get(node.opType) ?? 0) + 1);
  return [...counts].map(([op, count]) => (count > 1 ? `${count} × ${op}` : op)).join(', ');
}

function findKv(inputs: OnnxValueInfo[], outputNames: string[], fileName: string): KvInput[] {
  const byLayer = new Map<number, Partial<KvInput>>();
  const entry = (layer: number) => {
    let e = byLayer.get(layer);
    if (!e) byLayer.set(layer, (e = { layer }));
    return e;
  };
  for (const input of inputs) {
    const match = PAST_RE.exec(input.name);
    if (!match) continue;
    const e = entry(Number(match[1]));
    if (match[2] === 'key') {
      e.keyInput = input.name;
      e.elemType = input.elemType ?? TensorType.FLOAT;
      e.shape = input.shape ?? [];
    } else e.valueInput = input.name;
  }
  for (const name of outputNames) {
    const match = PRESENT_RE.exec(name);
    if (!match || !byLayer.has(Number(match[1]))) continue;
    const e = entry(Number(match[1]));
    if (match[2] === 'key') e.keyOutput = name;
    else e.valueOutput = name;
  }
  const layers = [...byLayer.keys()].sort((a, b) => a - b);
  if (layers.length === 0) {
    throw new UnsupportedGraphError(
      `${fileName} has no past_key_values.N.key inputs: Tiller needs a decoder exported with its KV cache ("with past"), as Transformers.js uses.`,
    );
  }
  const kv: KvInput[] = [];
  for (const [index, layer] of layers.entries()) {
    const e = byLayer.get(layer)!;
    if (layer !== index || !e.keyInput || !e.valueInput || !e.keyOutput || !e.valueOutput) {
      throw new UnsupportedGraphError(
        `${fileName}: the KV cache of layer ${layer} is incomplete (need past_key_values.${layer}.key/value inputs and present.${layer}.key/value outputs).`,
      );
    }
    kv.push(e as KvInput);
  }
  return kv;
}

function findEmbedding(
  nodes: OnnxNode[],
  consumersOf: (name: string) => OnnxNode[],
  constants: Set<string>,
  initializerDims: Map<string, number[]>,
  fileName: string,
) {
  // input_ids may reach the lookup through a Cast (int32 graphs).
  const idNames = new Set(['input_ids']);
  for (const user of consumersOf('input_ids')) if (user.opType === 'Cast') idNames.add(user.outputs[0]);
  const node = nodes.find(
    (n) => (n.opType === 'Gather' || n.opType === 'GatherBlockQuantized') && idNames.has(n.inputs[1]) && constants.has(n.inputs[0]),
  );
  if (!node) {
    throw new UnsupportedGraphError(`${fileName}: found no embedding lookup (a Gather of a weight by input_ids).`);
  }
  // A plain Gather reads a [vocab, hidden] table; block-quantised tables pack the width, so config.json tells.
  const hiddenSize = node.opType === 'Gather' ? initializerDims.get(node.inputs[0])?.[1] : undefined;
  return { node, output: node.outputs[0], hiddenSize };
}

function nextResidualStep(current: string, consumersOf: (name: string) => OnnxNode[], constants: Set<string>) {
  // The residual may be cast (fp16 exports) or reshaped (OPT flattens it around its MLP) before the next
  // addition: look through both, remembering which aliases are reshaped views.
  const aliases = [current];
  const reshaped = new Set<string>();
  for (let i = 0; i < aliases.length; i++) {
    for (const user of consumersOf(aliases[i])) {
      if (user.opType !== 'Cast' && user.opType !== 'Reshape') continue;
      if (user.opType === 'Reshape' && user.inputs[0] !== aliases[i]) continue;
      aliases.push(user.outputs[0]);
      if (user.opType === 'Reshape' || reshaped.has(aliases[i])) reshaped.add(user.outputs[0]);
    }
  }
  const reachable = forwardReachable(current, consumersOf);
  const candidates: { node: OnnxNode; residualInput: number; branchInput: number; flattened: boolean }[] = [];
  for (const alias of aliases) {
    const flattened = reshaped.has(alias);
    for (const node of consumersOf(alias)) {
      const at = node.inputs.indexOf(alias);
      if (node.opType === 'Add' && node.inputs.length === 2) {
        const other = node.inputs[1 - at];
        // A residual addition adds a branch computed from the residual itself (not a bias, not a mask).
        if (other !== alias && !constants.has(other) && reachable.has(other)) {
          candidates.push({ node, residualInput: at, branchInput: 1 - at, flattened });
        }
      } else if (SKIP_NORMS.has(node.opType) && (at === 0 || at === 1)) {
        candidates.push({ node, residualInput: at, branchInput: 1 - at, flattened });
      }
    }
  }
  return candidates.length === 1 ? candidates[0] : undefined;
}

function forwardReachable(start: string, consumersOf: (name: string) => OnnxNode[]): Set<string> {
  const seen = new Set<string>([start]);
  const queue = [start];
  while (queue.length > 0) {
    for (const node of consumersOf(queue.pop()!)) {
      for (const output of node.outputs) {
        if (output && !seen.has(output)) {
          seen.add(output);
          queue.push(output);
        }
      }
    }
  }
  return seen;
}

/** Element types of tensors: declared ones first, otherwise propagated from producers. */
class TypeResolver {
  private readonly known = new Map<string, number>();

  constructor(model: OnnxModel, private readonly producers: Map<string, OnnxNode>) {
    const { graph } = model;
    for (const info of [...graph.inputs, ...graph.outputs, ...graph.valueInfo]) {
      if (info.elemType) this.known.set(info.name, info.elemType);
    }
    for (const tensor of graph.initializers) this.known.set(tensor.name, tensor.dataType);
  }

  typeOf(name: string, depth = 0): number {
    const cached = this.known.get(name);
    if (cached !== undefined) return cached;
    const node = this.producers.get(name);
    if (!node || depth > 200) return 0;
    let type: number;
    switch (node.opType) {
      case 'Cast': type = node.attributes.get('to')?.int ?? 0; break;
      case 'Constant': type = node.attributes.get('value')?.tensor?.dataType ?? 0; break;
      case 'Shape': case 'Size': type = TensorType.INT64; break;
      case 'Gather': type = this.typeOf(node.inputs[0], depth + 1); break;
      case 'GatherBlockQuantized': type = this.typeOf(node.inputs[2], depth + 1); break; // the scales' type
      case 'DequantizeLinear': type = this.typeOf(node.inputs[1], depth + 1); break;
      default: type = this.typeOf(node.inputs[0], depth + 1);
    }
    this.known.set(name, type);
    return type;
  }
}
