/**
 * A light, read-only view of an ONNX ModelProto: nodes, initializers and graph I/O decoded just far
 * enough to analyse the graph, each remembering its byte range so that edits can copy the rest verbatim.
 * Field numbers are from onnx.proto3.
 */
import { type Field, ProtoError, fields, fieldFloat32, fieldString, pushInts } from './proto.ts';

export const TensorType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  INT32: 6,
  INT64: 7,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  BFLOAT16: 16,
} as const;

const TYPE_NAMES: Record<number, string> = {
  1: 'float32', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64', 8: 'string',
  9: 'bool', 10: 'float16', 11: 'float64', 12: 'uint32', 13: 'uint64', 16: 'bfloat16', 21: 'uint4', 22: 'int4',
};

export function typeName(elemType: number | undefined): string {
  return elemType === undefined ? 'unknown' : TYPE_NAMES[elemType] ?? `type ${elemType}`;
}

export interface OnnxAttribute {
  name: string;
  int?: number;
  ints?: number[];
  float?: number;
  string?: string;
  /** Tensor value (Constant nodes). */
  tensor?: OnnxTensor;
  /** A graph-valued attribute (If/Loop/Scan bodies), which this engine cannot see into. */
  hasGraph: boolean;
}

export interface OnnxNode {
  index: number;
  /** Absolute byte range of the NodeProto payload. */
  start: number;
  end: number;
  name: string;
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attributes: Map<string, OnnxAttribute>;
}

export interface ExternalDataRef {
  location: string;
  offset: number;
  length: number | undefined;
}

export interface OnnxTensor {
  index: number;
  start: number;
  end: number;
  name: string;
  dataType: number;
  dims: number[];
  /** Absolute byte range of raw_data, when the tensor embeds its bytes that way. */
  rawData?: { start: number; end: number };
  externalData?: ExternalDataRef;
}

export type Dim = number | string | undefined;

export interface OnnxValueInfo {
  name: string;
  elemType?: number;
  shape?: Dim[];
}

export interface OnnxGraph {
  /** Absolute byte range of the GraphProto payload inside the model. */
  start: number;
  end: number;
  nodes: OnnxNode[];
  initializers: OnnxTensor[];
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
  valueInfo: OnnxValueInfo[];
}

export interface OnnxModel {
  /** The name it was loaded as, for messages. */
  fileName: string;
  bytes: Uint8Array;
  /** The ModelProto field holding the graph, replaced wholesale when the graph is edited. */
  graphField: Field;
  graph: OnnxGraph;
  opsets: { domain: string; version: number }[];
}

export class OnnxFormatError extends Error {}

const MODEL_GRAPH = 7;
const MODEL_OPSET = 8;

/** Reads an .onnx file's structure. Throws OnnxFormatError naming `fileName` when the bytes are not a whole model. */
export function parseModel(bytes: Uint8Array, fileName = 'model.onnx'): OnnxModel {
  try {
    let graphField: Field | undefined;
    const opsets: OnnxModel['opsets'] = [];
    for (const field of fields(bytes)) {
      if (field.number === MODEL_GRAPH) graphField = field;
      else if (field.number === MODEL_OPSET) opsets.push(parseOpset(bytes, field));
    }
    if (!graphField) throw new OnnxFormatError(`${fileName} holds no graph: it is not an ONNX model (or it is empty)`);
    return { fileName, bytes, graphField, graph: parseGraph(bytes, graphField.valueStart, graphField.valueEnd), opsets };
  } catch (error) {
    if (error instanceof ProtoError) {
      throw new OnnxFormatError(
        `${fileName} (${bytes.length} bytes) is not a complete ONNX model: ${error.message}. ` +
          'The file is probably truncated (an interrupted download) or not an ONNX file: download it again.',
      );
    }
    throw error;
  }
}

function parseOpset(buf: Uint8Array, field: Field) {
  let domain = '';
  let version = 0;
  for (const f of fields(buf, field.valueStart, field.valueEnd)) {
    if (f.number === 1) domain = fieldString(buf, f);
    else if (f.number === 2) version = f.varint;
  }
  return { domain, version };
}

function parseGraph(buf: Uint8Array, start: number, end: number): OnnxGraph {
  const graph: OnnxGraph = { start, end, nodes: [], initializers: [], inputs: [], outputs: [], valueInfo: [] };
  for (const field of fields(buf, start, end)) {
    switch (field.number) {
      case 1: graph.nodes.push(parseNode(buf, field, graph.nodes.length)); break;
      case 5: graph.initializers.push(parseTensor(buf, field, graph.initializers.length)); break;
      case 11: graph.inputs.push(parseValueInfo(buf, field)); break;
      case 12: graph.outputs.push(parseValueInfo(buf, field)); break;
      case 13: graph.valueInfo.push(parseValueInfo(buf, field)); break;
    }
  }
  return graph;
}

function parseNode(buf: Uint8Array, field: Field, index: number): OnnxNode {
  const node: OnnxNode = {
    index, start: field.valueStart, end: field.valueEnd,
    name: '', opType: '', domain: '', inputs: [], outputs: [], attributes: new Map(),
  };
  for (const f of fields(buf, field.valueStart, field.valueEnd)) {
    switch (f.number) {
      case 1: node.inputs.push(fieldString(buf, f)); break;
      case 2: node.outputs.push(fieldString(buf, f)); break;
      case 3: node.name = fieldString(buf, f); break;
      case 4: node.opType = fieldString(buf, f); break;
      case 7: node.domain = fieldString(buf, f); break;
      case 5: {
        const attribute = parseAttribute(buf, f);
        node.attributes.set(attribute.name, attribute);
        break;
      }
    }
  }
  if (node.domain === 'ai.onnx') node.domain = '';
  return node;
}

function parseAttribute(buf: Uint8Array, field: Field): OnnxAttribute {
  const attribute: OnnxAttribute = { name: '', hasGraph: false };
  for (const f of fields(buf, field.valueStart, field.valueEnd)) {
    switch (f.number) {
      case 1: attribute.name = fieldString(buf, f); break;
      case 2: attribute.float = fieldFloat32(buf, f); break;
      case 3: attribute.int = f.varint; break;
      case 4: attribute.string = fieldString(buf, f); break;
      case 5: attribute.tensor = parseTensor(buf, f, -1); break;
      case 6: case 11: attribute.hasGraph = true; break;
      case 8: pushInts(buf, f, (attribute.ints ??= [])); break;
    }
  }
  return attribute;
}

function parseTensor(buf: Uint8Array, field: Field, index: number): OnnxTensor {
  const tensor: OnnxTensor = { index, start: field.valueStart, end: field.valueEnd, name: '', dataType: 0, dims: [] };
  const external: Record<string, string> = {};
  for (const f of fields(buf, field.valueStart, field.valueEnd)) {
    switch (f.number) {
      case 1: pushInts(buf, f, tensor.dims); break;
      case 2: tensor.dataType = f.varint; break;
      case 8: tensor.name = fieldString(buf, f); break;
      case 9: tensor.rawData = { start: f.valueStart, end: f.valueEnd }; break;
      case 13: {
        let key = '';
        let value = '';
        for (const entry of fields(buf, f.valueStart, f.valueEnd)) {
          if (entry.number === 1) key = fieldString(buf, entry);
          else if (entry.number === 2) value = fieldString(buf, entry);
        }
        external[key] = value;
        break;
      }
    }
  }
  if (external.location !== undefined) {
    tensor.externalData = {
      location: external.location,
      offset: Number(external.offset ?? 0),
      length: external.length === undefined ? undefined : Number(external.length),
    };
  }
  return tensor;
}

function parseValueInfo(buf: Uint8Array, field: Field): OnnxValueInfo {
  const info: OnnxValueInfo = { name: '' };
  for (const f of fields(buf, field.valueStart, field.valueEnd)) {
    if (f.number === 1) info.name = fieldString(buf, f);
    else if (f.number === 2) {
      for (const typeField of fields(buf, f.valueStart, f.valueEnd)) {
        if (typeField.number !== 1) continue; // tensor_type; sequences and maps do not occur here
        for (const t of fields(buf, typeField.valueStart, typeField.valueEnd)) {
          if (t.number === 1) info.elemType = t.varint;
          else if (t.number === 2) info.shape = parseShape(buf, t);
        }
      }
    }
  }
  return info;
}

function parseShape(buf: Uint8Array, field: Field): Dim[] {
  const shape: Dim[] = [];
  for (const dimField of fields(buf, field.valueStart, field.valueEnd)) {
    if (dimField.number !== 1) continue;
    let dim: Dim;
    for (const d of fields(buf, dimField.valueStart, dimField.valueEnd)) {
      if (d.number === 1) dim = d.varint;
      else if (d.number === 2) dim = fieldString(buf, d);
    }
    shape.push(dim);
  }
  return shape;
}

/** Names of the external data files the graph's initializers point to, in first-use order. */
export function externalDataFiles(model: OnnxModel): string[] {
  const files = new Set<string>();
  for (const tensor of model.graph.initializers) {
    if (tensor.externalData) files.add(tensor.externalData.location);
  }
  return [...files];
}

/** Which node writes each tensor, and which nodes read it (each reader once). */
export function tensorLinks(nodes: OnnxNode[]): { producers: Map<string, OnnxNode>; consumers: Map<string, OnnxNode[]> } {
  const producers = new Map<string, OnnxNode>();
  const consumers = new Map<string, OnnxNode[]>();
  for (const node of nodes) {
    for (const output of node.outputs) if (output) producers.set(output, node);
    for (const input of node.inputs) {
      if (!input) continue;
      let list = consumers.get(input);
      if (!list) consumers.set(input, (list = []));
      if (!list.includes(node)) list.push(node);
    }
  }
  return { producers, consumers };
}
