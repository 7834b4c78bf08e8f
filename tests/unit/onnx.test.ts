import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { UnsupportedGraphError, analyseGraph } from '../../src/engine/onnx/analysis.ts';
import { OnnxFormatError, TensorType, parseModel } from '../../src/engine/onnx/model.ts';
import { ProtoWriter, readVarint } from '../../src/engine/onnx/proto.ts';
import { instrumentModel } from '../../src/engine/onnx/surgery.ts';
import { fromFloat16Bits, toFloat16Bits } from '../../src/engine/model/float16.ts';
import { graphPair } from '../support/models.ts';
import { sharedGraphPath } from '../support/paths.ts';
import { tinyGraph } from '../support/tiny-graph.ts';

const read = (name: Parameters<typeof sharedGraphPath>[0]) => new Uint8Array(readFileSync(sharedGraphPath(name)));

describe('protobuf wire format', () => {
  it('writes and reads negative int64 as ten-byte varints', () => {
    for (const value of [-1, -2, -123456789, 0, 1, 300, 2 ** 40]) {
      const bytes = new ProtoWriter().varint(value).finish();
      if (value < 0) expect(bytes.length).toBe(10);
      expect(readVarint(bytes, 0, bytes.length)).toEqual([value, bytes.length]);
    }
  });
});

describe('fp16 conversion', () => {
  it('matches IEEE half precision at the edges', () => {
    expect(toFloat16Bits(1)).toBe(0x3c00);
    expect(toFloat16Bits(-2)).toBe(0xc000);
    expect(toFloat16Bits(65504)).toBe(0x7bff);
    expect(toFloat16Bits(70000)).toBe(0x7c00);
    expect(toFloat16Bits(2 ** -24)).toBe(1);
    expect(toFloat16Bits(1e-9)).toBe(0);
    expect(fromFloat16Bits(0x7bff)).toBe(65504);
    expect(fromFloat16Bits(1)).toBe(2 ** -24);
    expect(Number.isNaN(fromFloat16Bits(toFloat16Bits(NaN)))).toBe(true);
    for (const value of [0.1, -3.14159, 1000.5, 6e-5]) {
      expect(Math.abs(fromFloat16Bits(toFloat16Bits(value)) - value)).toBeLessThanOrEqual(Math.abs(value) * 2 ** -11);
    }
  });
});

describe('graph analysis, by structure', () => {
  it('torch export (stories260K): a plain Add chain, every residual materialised', () => {
    const analysis = analyseGraph(parseModel(read('stories')));
    expect(analysis.flavour).toBe('torch');
    expect(analysis.layerCount).toBe(5);
    expect(analysis.hiddenSize).toBe(64);
    expect(analysis.residualType).toBe(TensorType.FLOAT);
    expect(analysis.layers.every((site) => site.node.opType === 'Add' && site.residual)).toBe(true);
    expect(analysis.positionIds?.name).toBe('position_ids');
    expect(analysis.numLogitsToKeep).toBeUndefined();
    expect(analysis.kv[0]).toMatchObject({ keyInput: 'past_key_values.0.key', keyOutput: 'present.0.key', shape: ['batch_size', 4, 'past_sequence_length', 8] });
  });

  it('builder export: SkipSimplifiedLayerNormalization output 3, the last residual not materialised, fp16', () => {
    const analysis = analyseGraph(parseModel(read('builder')));
    expect(analysis.flavour).toBe('fused');
    expect(analysis.layerCount).toBe(2);
    expect(analysis.residualType).toBe(TensorType.FLOAT16);
    expect(analysis.layers[0].node.opType).toBe('SkipSimplifiedLayerNormalization');
    expect(analysis.layers[0].residual).toBe(analysis.layers[0].node.outputs[3]);
    expect(analysis.layers[1].residual).toBeUndefined();
    expect(analysis.externalDataFiles).toEqual(['model.onnx.data']);
  });

  it('ORT-optimised GQA graph: SkipLayerNormalization with generic names, int32 input_ids', () => {
    const analysis = analyseGraph(parseModel(read('gqa')));
    expect(analysis.flavour).toBe('fused');
    expect(analysis.layerCount).toBe(2);
    expect(analysis.layers[0].residual).toBe('l0.r2');
    expect(analysis.inputIds.elemType).toBe(TensorType.INT32);
    expect(analysis.positionIds).toBeUndefined();
  });

  it('refuses a config.json that disagrees with the graph', () => {
    expect(() => analyseGraph(parseModel(read('stories')), { numHiddenLayers: 7 })).toThrow(/num_hidden_layers = 7 .* 5 layers/);
    expect(() => analyseGraph(parseModel(read('stories')), { hiddenSize: 128 })).toThrow(/hidden_size = 128 .* 64 wide/);
  });

  it('refuses a graph without residual additions, saying what it found and expected', () => {
    const graph = tinyGraph();
    expect(() => analyseGraph(parseModel(graph, 'tiny.onnx'))).toThrow(UnsupportedGraphError);
    expect(() => analyseGraph(parseModel(graph, 'tiny.onnx'))).toThrow(/tiny.onnx: found 0 residual additions .* expected 2 per layer for the 1 layers .*; the walk stopped at "embedded", read by MatMul/);
  });

  it('refuses a graph without a KV cache', () => {
    expect(() => analyseGraph(parseModel(tinyGraph({ withPast: false }), 'nopast.onnx'))).toThrow(/no past_key_values.N.key inputs/);
  });

  it('names a truncated file and says to download it again', () => {
    const bytes = read('stories');
    const cut = bytes.subarray(0, Math.floor(bytes.length * 0.6));
    expect(() => parseModel(cut, 'onnx/model.onnx')).toThrow(OnnxFormatError);
    expect(() => parseModel(cut, 'onnx/model.onnx')).toThrow(/onnx\/model.onnx .* not a complete ONNX model.*truncated.*download it again/);
  });
});

describe('graph surgery', () => {
  it('keeps every untouched node byte for byte and points weights at the original bytes', () => {
    const bytes = read('stories');
    const model = parseModel(bytes);
    const analysis = analyseGraph(model);
    const result = instrumentModel(model, analysis, { fileName: 'model.onnx' });
    expect(result.selfReference).toBe('model.onnx');
    expect(result.bytes.length).toBeLessThan(bytes.length / 5); // the weights were not copied

    const edited = parseModel(result.bytes);
    const changed = new Set(analysis.layers.map((site) => site.node.index));
    expect(analysis.lmHead?.node.opType).toBe('MatMul');
    expect(edited.graph.nodes[analysis.lmHead!.node.index].inputs[0]).toBe('tiller.lm_head_input');
    changed.add(analysis.lmHead!.node.index);
    for (const node of model.graph.nodes) {
      const twin = edited.graph.nodes[node.index];
      if (node.index === analysis.lmHead!.node.index) continue;
      if (changed.has(node.index)) {
        expect(twin.inputs[analysis.layers.find((s) => s.node.index === node.index)!.branchInput]).toMatch(/^tiller\.layer\d+\.steered_branch$/);
        continue;
      }
      expect(Buffer.from(result.bytes.subarray(twin.start, twin.end)).equals(Buffer.from(bytes.subarray(node.start, node.end)))).toBe(true);
    }
    for (const tensor of model.graph.initializers) {
      const twin = edited.graph.initializers[tensor.index];
      expect(twin.name).toBe(tensor.name);
      expect(twin.dims).toEqual(tensor.dims);
      if (!tensor.rawData || tensor.rawData.end - tensor.rawData.start < 1024) continue;
      expect(twin.externalData).toEqual({ location: 'model.onnx', offset: tensor.rawData.start, length: tensor.rawData.end - tensor.rawData.start });
    }
    expect(edited.graph.inputs.map((i) => i.name).slice(-6)).toEqual([...[0, 1, 2, 3, 4].map((l) => `tiller.steer.${l}`), 'tiller.logits_from']);
    expect(edited.graph.inputs.at(-2)).toMatchObject({ elemType: TensorType.FLOAT, shape: ['batch_size', 'steer_length', 64] });
    expect(edited.graph.outputs.map((o) => o.name).slice(-5)).toEqual(analysis.layers.map((s) => s.residual));
  });

  it('slices the LM head input so prefill computes the last position only, or the positions from a given one', async () => {
    const { instrumented } = await graphPair('stories');
    expect(instrumented.instrumentation.logitsFrom).toBe('tiller.logits_from');
    const tokens = [[1, 274, 287, 286, 399, 261]];
    const last = await instrumented.forward({ tokens, logits: 'last' });
    const all = await instrumented.forward({ tokens, logits: 'all' });
    expect(last.logits).toHaveLength(512);
    expect(all.logits).toHaveLength(6 * 512);
    expect(Array.from(last.logits!)).toEqual(Array.from(all.logits!.subarray(5 * 512)));
    // From a position on (the steerability pass reads only the positions that predict scored tokens), two rows.
    const rows = [tokens[0], [1, 274, 287, 286, 290, 261]];
    const every = await instrumented.forward({ tokens: rows, logits: 'all' });
    const fromThree = await instrumented.forward({ tokens: rows, logits: 'all', logitsFrom: 3 });
    expect(fromThree.logits).toHaveLength(2 * 3 * 512);
    for (const row of [0, 1]) {
      expect(Array.from(fromThree.logits!.subarray(row * 3 * 512, (row + 1) * 3 * 512))).toEqual(Array.from(every.logits!.subarray((row * 6 + 3) * 512, (row + 1) * 6 * 512)));
    }
    await expect(instrumented.forward({ tokens, logits: 'all', logitsFrom: 6 })).rejects.toThrow(/logitsFrom 6 is outside the 6 positions/);
    await instrumented.dispose();
  });

  it('declares fp16 steering inputs for an fp16 residual and adds the missing last residual', () => {
    const model = parseModel(read('builder'));
    const analysis = analyseGraph(model);
    const edited = parseModel(instrumentModel(model, analysis, { fileName: 'model_fp16.onnx' }).bytes);
    expect(edited.graph.inputs.find((i) => i.name === 'tiller.steer.1')?.elemType).toBe(TensorType.FLOAT16);
    const lastResidual = edited.graph.nodes.find((n) => n.outputs[0] === 'tiller.residual.1')!;
    expect(lastResidual.opType).toBe('Add');
    expect(lastResidual.inputs).toEqual([analysis.layers[1].node.inputs[0], 'tiller.layer1.steered_branch']);
  });
});
