/**
 * Makes a decoder steerable by editing its protobuf bytes:
 *  - one steering input per instrumented layer, `[batch, 1 or sequence, hidden]` in the residual's
 *    type, added to the branch input of the node that makes that layer's residual, so both the
 *    residual and the normalised output that feeds the next sub-block see it (zeros are an identity);
 *    where that node adds a flattened view (`[batch·seq, hidden]`, OPT), the branch is viewed in the
 *    embedding's `[batch, seq, hidden]` for the edit and flattened back;
 *  - one ablation input per instrumented layer, `[batch, 1, hidden]`: a unit vector u whose component is
 *    removed from that layer's residual (r − (r·u)u, through the branch again); zeros are an identity;
 *  - one hidden-state output per layer, adding `residual + branch` beside the fused final norm where
 *    the graph never materialises the last residual;
 *  - where the graph has no num_logits_to_keep, a Slice before the LM head so that prefill computes
 *    logits for the last position only;
 *  - large embedded initializers rewritten as external data pointing at the original file's bytes,
 *    so a single-file model is passed to ONNX Runtime once and never copied.
 * Every field the edit does not touch is copied byte for byte.
 */
import type { GraphAnalysis } from './analysis.ts';
import { CONTRIB_DOMAIN, type FusionPlan } from './fusion.ts';
import { type OnnxModel, type OnnxNode, type OnnxTensor, TensorType } from './model.ts';
import { ProtoWriter, WIRE_FIXED32, fields } from './proto.ts';

export interface SurgeryOptions {
  /** File name the graph was loaded as: externalised initializers point at it. */
  fileName: string;
  /** Layers that get a steering input (default: all). */
  steerLayers?: number[];
  /** Steered layers that also get an ablation input (default: none; each costs a few small ops per step). */
  ablateLayers?: number[];
  /** Embedded initializers at least this large become external data (default 1 KiB). */
  externalizeMinBytes?: number;
  /** Contrib-op fusions (fusion.ts) applied in the same edit. */
  fusion?: FusionPlan;
}

export interface SurgeryResult {
  /** The edited model: graph only, where weights were embedded. */
  bytes: Uint8Array;
  /** Layer → name of its steering input. */
  steeringInputs: Map<number, string>;
  /** Layer → name of its ablation input. */
  ablationInputs: Map<number, string>;
  /** Layer → name of the output holding its residual. */
  hiddenOutputs: Map<number, string>;
  /** Set when initializers were externalised: pass `{ path, data: original bytes }` to ONNX Runtime. */
  selfReference?: string;
  /** Input taking the first position to compute logits for (`[1]` int64), where the graph has no
   *  num_logits_to_keep: the LM head then reads only positions from there on. */
  logitsFrom?: string;
}

export const LOGITS_FROM = 'tiller.logits_from';

// Model, graph and node field numbers (onnx.proto3).
const MODEL_OPSET_IMPORT = 8;
const GRAPH_NODE = 1;
const GRAPH_INITIALIZER = 5;
const GRAPH_INPUT = 11;
const GRAPH_OUTPUT = 12;
const NODE_INPUT = 1;
const TENSOR_RAW_DATA = 9;
const TENSOR_EXTERNAL_DATA = 13;
const TENSOR_DATA_LOCATION = 14;
const DATA_LOCATION_EXTERNAL = 1;

export const steeringInputName = (layer: number) => `tiller.steer.${layer}`;
export const ablationInputName = (layer: number) => `tiller.ablate.${layer}`;

export function instrumentModel(model: OnnxModel, analysis: GraphAnalysis, options: SurgeryOptions): SurgeryResult {
  const { bytes, graph } = model;
  const steerLayers = new Set(options.steerLayers ?? analysis.layers.map((site) => site.layer));
  const ablateLayers = new Set(options.ablateLayers ?? []);
  const minBytes = options.externalizeMinBytes ?? 1024;
  const batchDim = graph.inputs.find((i) => i.name === analysis.inputIds.name)?.shape?.[0];

  const replacedNodes = new Map<number, Uint8Array>();
  const addedNodes: Uint8Array[] = [];
  const addedInputs: Uint8Array[] = [];
  const addedOutputs: Uint8Array[] = [];
  const steeringInputs = new Map<number, string>();
  const ablationInputs = new Map<number, string>();
  const hiddenOutputs = new Map<number, string>();
  const vectorShape = [typeof batchDim === 'string' ? batchDim : 'batch_size', 'steer_length', analysis.hiddenSize];

  for (const site of analysis.layers) {
    const originalBranch = site.node.inputs[site.branchInput];
    let branch = originalBranch;
    let residualBefore = site.node.inputs[site.residualInput];
    const flattened = site.flattened && steerLayers.has(site.layer);
    if (flattened) {
      const sequenceShape = `tiller.layer${site.layer}.sequence_shape`;
      addedNodes.push(encodeNode('Shape', `tiller/sequence_shape_${site.layer}`, [analysis.embeddingOutput], [sequenceShape]));
      const byPosition = (name: string, tag: string) => {
        addedNodes.push(encodeNode('Reshape', `tiller/unflatten_${tag}_${site.layer}`, [name, sequenceShape], [`tiller.layer${site.layer}.${tag}_by_position`]));
        return `tiller.layer${site.layer}.${tag}_by_position`;
      };
      branch = byPosition(branch, 'branch');
      // Ablation computes the residual itself, so it needs the residual in that view too.
      if (ablateLayers.has(site.layer)) residualBefore = byPosition(residualBefore, 'residual_before');
    }
    // Skip*LayerNormalization output 3 is input + skip (+ bias, where the norm has one).
    const bias = site.node.opType.startsWith('Skip') ? site.node.inputs[site.node.opType === 'SkipLayerNormalization' ? 4 : 3] || undefined : undefined;
    /** Nodes computing residualBefore + branch (+ bias) into `name`. */
    const residualOf = (branchName: string, name: string, tag: string) => {
      const sum = bias ? `${name}.without_bias` : name;
      addedNodes.push(encodeNode('Add', `tiller/${tag}_${site.layer}`, [residualBefore, branchName], [sum]));
      if (bias) addedNodes.push(encodeNode('Add', `tiller/${tag}_bias_${site.layer}`, [sum, bias], [name]));
    };
    if (steerLayers.has(site.layer)) {
      const steer = steeringInputName(site.layer);
      const prefix = `tiller.layer${site.layer}`;
      const steered = `${prefix}.steered_branch`;
      addedInputs.push(encodeTensorValueInfo(steer, site.elemType, vectorShape));
      addedNodes.push(encodeNode('Add', `tiller/steer_${site.layer}`, [branch, steer], [steered]));
      steeringInputs.set(site.layer, steer);
      branch = steered;
      if (ablateLayers.has(site.layer)) {
        // The residual r this layer would make, its component along u, taken out of the branch.
        const ablate = ablationInputName(site.layer);
        addedInputs.push(encodeTensorValueInfo(ablate, site.elemType, vectorShape));
        residualOf(steered, `${prefix}.steered_residual`, 'steered_residual');
        addedNodes.push(
          encodeNode('Transpose', `tiller/ablate_column_${site.layer}`, [ablate], [`${prefix}.ablate_column`], [intsAttribute('perm', [0, 2, 1])]),
          encodeNode('MatMul', `tiller/ablate_dot_${site.layer}`, [`${prefix}.steered_residual`, `${prefix}.ablate_column`], [`${prefix}.ablate_dot`]),
          encodeNode('Mul', `tiller/ablate_component_${site.layer}`, [`${prefix}.ablate_dot`, ablate], [`${prefix}.ablate_component`]),
          encodeNode('Sub', `tiller/ablate_${site.layer}`, [steered, `${prefix}.ablate_component`], [`${prefix}.ablated_branch`]),
        );
        ablationInputs.set(site.layer, ablate);
        branch = `${prefix}.ablated_branch`;
      }
      if (flattened) {
        const flatShape = `${prefix}.flat_shape`;
        addedNodes.push(
          encodeNode('Shape', `tiller/flat_shape_${site.layer}`, [originalBranch], [flatShape]),
          encodeNode('Reshape', `tiller/flatten_${site.layer}`, [branch, flatShape], [`${prefix}.flat_branch`]),
        );
        branch = `${prefix}.flat_branch`;
      }
      replacedNodes.set(site.node.index, replaceNodeInput(bytes, site.node, site.branchInput, branch));
    }
    let residual = site.residual;
    if (!residual) {
      residual = `tiller.residual.${site.layer}`;
      residualOf(branch, residual, 'residual');
    }
    // Declared by name only: ONNX Runtime infers its type and shape.
    addedOutputs.push(new ProtoWriter().string(1, residual).finish());
    hiddenOutputs.set(site.layer, residual);
  }

  const addedInitializers: Uint8Array[] = [];
  const lmHead = analysis.lmHead;
  if (lmHead) {
    const sliced = 'tiller.lm_head_input';
    addedInputs.push(encodeTensorValueInfo(LOGITS_FROM, TensorType.INT64, [1]));
    addedInitializers.push(encodeInt64Tensor('tiller.logits_to', [Number.MAX_SAFE_INTEGER]), encodeInt64Tensor('tiller.sequence_axis', [1]));
    addedNodes.push(encodeNode('Slice', 'tiller/logits_from', [lmHead.input, LOGITS_FROM, 'tiller.logits_to', 'tiller.sequence_axis'], [sliced]));
    replacedNodes.set(lmHead.node.index, replaceNodeInput(bytes, lmHead.node, 0, sliced));
  }

  const replacedInitializers = new Map<number, Uint8Array>();
  for (const tensor of graph.initializers) {
    if (tensor.rawData && tensor.rawData.end - tensor.rawData.start >= minBytes) {
      replacedInitializers.set(tensor.index, externalizeTensor(bytes, tensor, options.fileName));
    }
  }

  const fusion = options.fusion;
  if (fusion && [...replacedNodes.keys()].some((index) => fusion.removedNodes.has(index))) {
    throw new Error('fusion removed a node that steering edits (a residual Add or the LM head)');
  }
  const fused = fusion !== undefined && fusion.applied.length > 0;
  const edited = rewriteGraph(model, {
    replacedNodes, replacedInitializers,
    removedNodes: fused ? fusion.removedNodes : undefined,
    addedNodes: fused ? [...addedNodes, ...fusion.addedNodes] : addedNodes,
    addedInitializers: fused ? [...addedInitializers, ...fusion.addedInitializers] : addedInitializers,
    addedInputs, addedOutputs,
    addedDomains: fused ? [CONTRIB_DOMAIN] : undefined,
  });
  return {
    bytes: edited,
    steeringInputs,
    ablationInputs,
    hiddenOutputs,
    selfReference: replacedInitializers.size > 0 ? options.fileName : undefined,
    logitsFrom: lmHead ? LOGITS_FROM : undefined,
  };
}

/**
 * A copy of the model whose residual after `layer` has a constant `vector` added at every position (through
 * the branch, as steering adds it), weights left where they were. A model that differs from the original by
 * a known vector: what model diffing must recover exactly.
 */
export function bakeResidualVector(model: OnnxModel, analysis: GraphAnalysis, layer: number, vector: Float32Array): Uint8Array {
  const site = analysis.layers.find((entry) => entry.layer === layer);
  if (!site) throw new Error(`layer ${layer} does not exist (the model has layers 0–${analysis.layerCount - 1})`);
  if (site.elemType !== TensorType.FLOAT) throw new Error('baking a vector in needs a float32 residual');
  if (vector.length !== analysis.hiddenSize) throw new Error(`the vector has ${vector.length} values; the hidden size is ${analysis.hiddenSize}`);
  const constant = `tiller.baked.${layer}`;
  const bakedBranch = `tiller.layer${layer}.baked_branch`;
  const raw = new Uint8Array(Float32Array.from(vector).buffer);
  return rewriteGraph(model, {
    replacedNodes: new Map([[site.node.index, replaceNodeInput(model.bytes, site.node, site.branchInput, bakedBranch)]]),
    addedNodes: [encodeNode('Add', `tiller/baked_${layer}`, [site.node.inputs[site.branchInput], constant], [bakedBranch])],
    addedInitializers: [new ProtoWriter().int(1, vector.length).int(2, TensorType.FLOAT).string(8, constant).bytes(TENSOR_RAW_DATA, raw).finish()],
  });
}

interface GraphEdit {
  /** Node or initializer index → its new bytes. */
  replacedNodes?: Map<number, Uint8Array>;
  replacedInitializers?: Map<number, Uint8Array>;
  /** Node indices dropped from the graph. */
  removedNodes?: Set<number>;
  addedNodes?: Uint8Array[];
  addedInitializers?: Uint8Array[];
  addedInputs?: Uint8Array[];
  addedOutputs?: Uint8Array[];
  /** Operator domains the added nodes use (version 1 is imported where the model lacks them). */
  addedDomains?: string[];
}

/** The model with its graph edited; every other field copied byte for byte. */
function rewriteGraph(model: OnnxModel, edit: GraphEdit): Uint8Array {
  const { bytes, graph } = model;
  const graphWriter = new ProtoWriter();
  let nodeIndex = 0;
  let initializerIndex = 0;
  for (const field of fields(bytes, graph.start, graph.end)) {
    let replacement: Uint8Array | undefined;
    if (field.number === GRAPH_NODE) {
      const index = nodeIndex++;
      if (edit.removedNodes?.has(index)) continue;
      replacement = edit.replacedNodes?.get(index);
    }
    else if (field.number === GRAPH_INITIALIZER) replacement = edit.replacedInitializers?.get(initializerIndex++);
    if (replacement) graphWriter.bytes(field.number, replacement);
    else graphWriter.raw(bytes.subarray(field.start, field.end));
  }
  // ONNX Runtime sorts nodes topologically itself, so appended nodes may come last.
  for (const node of edit.addedNodes ?? []) graphWriter.bytes(GRAPH_NODE, node);
  for (const tensor of edit.addedInitializers ?? []) graphWriter.bytes(GRAPH_INITIALIZER, tensor);
  for (const input of edit.addedInputs ?? []) graphWriter.bytes(GRAPH_INPUT, input);
  for (const output of edit.addedOutputs ?? []) graphWriter.bytes(GRAPH_OUTPUT, output);

  const modelWriter = new ProtoWriter();
  for (const field of fields(bytes)) {
    if (field.start === model.graphField.start) modelWriter.bytes(field.number, graphWriter.finish());
    else modelWriter.raw(bytes.subarray(field.start, field.end));
  }
  for (const domain of edit.addedDomains ?? []) {
    if (!model.opsets.some((opset) => opset.domain === domain)) modelWriter.message(MODEL_OPSET_IMPORT, (opset) => opset.string(1, domain).int(2, 1));
  }
  return modelWriter.finish();
}

export function encodeNode(opType: string, name: string, inputs: string[], outputs: string[], attributes: Uint8Array[] = [], domain = ''): Uint8Array {
  const writer = new ProtoWriter();
  for (const input of inputs) writer.string(1, input);
  for (const output of outputs) writer.string(2, output);
  writer.string(3, name).string(4, opType);
  for (const attribute of attributes) writer.bytes(5, attribute);
  if (domain) writer.string(7, domain);
  return writer.finish();
}

// AttributeProto: name = 1, f = 2, i = 3, ints = 8, type = 20 (FLOAT = 1, INT = 2, INTS = 7).
export function intsAttribute(name: string, values: number[]): Uint8Array {
  const writer = new ProtoWriter().string(1, name);
  for (const value of values) writer.int(8, value);
  return writer.int(20, 7).finish();
}

export function intAttribute(name: string, value: number): Uint8Array {
  return new ProtoWriter().string(1, name).int(3, value).int(20, 2).finish();
}

export function floatAttribute(name: string, value: number): Uint8Array {
  const bits = new Uint8Array(4);
  new DataView(bits.buffer).setFloat32(0, value, true);
  return new ProtoWriter().string(1, name).tag(2, WIRE_FIXED32).raw(bits).int(20, 1).finish();
}

/** An int64 initializer, 1-D unless `dims` says otherwise ([] for a scalar). */
export function encodeInt64Tensor(name: string, values: number[], dims = [values.length]): Uint8Array {
  const raw = new Uint8Array(8 * values.length);
  const view = new DataView(raw.buffer);
  values.forEach((value, i) => view.setBigInt64(8 * i, BigInt(value), true));
  const writer = new ProtoWriter();
  for (const dim of dims) writer.int(1, dim);
  return writer.int(2, TensorType.INT64).string(8, name).bytes(TENSOR_RAW_DATA, raw).finish();
}

export function encodeTensorValueInfo(name: string, elemType: number, shape: (number | string)[]): Uint8Array {
  return new ProtoWriter()
    .string(1, name)
    .message(2, (type) => type.message(1, (tensor) => {
      tensor.int(1, elemType);
      tensor.message(2, (shapeWriter) => {
        for (const dim of shape) {
          shapeWriter.message(1, (d) => (typeof dim === 'number' ? d.int(1, dim) : d.string(2, dim)));
        }
      });
    }))
    .finish();
}

/** The node with one input renamed; inputs are written first, in order, then every other field as it was. */
function replaceNodeInput(bytes: Uint8Array, node: OnnxNode, index: number, name: string): Uint8Array {
  const writer = new ProtoWriter();
  node.inputs.forEach((input, i) => writer.string(NODE_INPUT, i === index ? name : input));
  for (const field of fields(bytes, node.start, node.end)) {
    if (field.number !== NODE_INPUT) writer.raw(bytes.subarray(field.start, field.end));
  }
  return writer.finish();
}

function externalizeTensor(bytes: Uint8Array, tensor: OnnxTensor, location: string): Uint8Array {
  const raw = tensor.rawData!;
  const writer = new ProtoWriter();
  for (const field of fields(bytes, tensor.start, tensor.end)) {
    if (field.number === TENSOR_RAW_DATA || field.number === TENSOR_EXTERNAL_DATA || field.number === TENSOR_DATA_LOCATION) continue;
    writer.raw(bytes.subarray(field.start, field.end));
  }
  const entry = (key: string, value: string) =>
    writer.message(TENSOR_EXTERNAL_DATA, (e) => e.string(1, key).string(2, value));
  entry('location', location);
  entry('offset', String(raw.start));
  entry('length', String(raw.end - raw.start));
  return writer.int(TENSOR_DATA_LOCATION, DATA_LOCATION_EXTERNAL).finish();
}
