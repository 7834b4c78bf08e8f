import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GGMLQuantizationType, GGUFValueType, gguf, type GGUFParseOutput, type GGUFTypedMetadata } from '@huggingface/gguf';
import { afterAll, describe, expect, it } from 'vitest';
import { GgufError, readControlVectorGguf, writeControlVectorGguf, type ControlVector } from '../../src/engine/directions/gguf.ts';

const bits = (v: Float32Array) => Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length));

/** Awkward floats: -0, subnormals, extremes; length 5 so data needs padding. */
function sample(): ControlVector {
  return {
    modelHint: 'llama',
    directions: [
      { layer: 3, vector: Float32Array.from([0.1, -0, 1.1754942e-38, -3.4028234663852886e38, -1.5e-45]) },
      { layer: 1, vector: Float32Array.from([3.4028234663852886e38, -7, 1e-40, 42, -0.25]) },
      { layer: 15, vector: Float32Array.from([1, 2, 3, 4, 5]) },
    ],
  };
}

/** Minimal independent GGUF v3 writer for malformed files: string metadata only, tensors given as raw bytes. */
function buildGguf(tensors: { name: string; dims: number[]; type: number; data: Uint8Array }[], version = 3): Uint8Array {
  const out: number[] = [];
  const u32 = (v: number) => out.push(...new Uint8Array(new Uint32Array([v]).buffer));
  const u64 = (v: number) => out.push(...new Uint8Array(new BigUint64Array([BigInt(v)]).buffer));
  const str = (s: string) => (u64(Buffer.byteLength(s)), out.push(...Buffer.from(s)));
  out.push(...Buffer.from('GGUF'));
  u32(version);
  u64(tensors.length);
  u64(1);
  str('general.architecture');
  u32(8);
  str('controlvector');
  let offset = 0;
  for (const t of tensors) {
    str(t.name);
    u32(t.dims.length);
    t.dims.forEach(u64);
    u32(t.type);
    u64(offset);
    offset += Math.ceil(t.data.length / 32) * 32;
  }
  while (out.length % 32) out.push(0);
  for (const t of tensors) {
    out.push(...t.data);
    while (out.length % 32) out.push(0);
  }
  return Uint8Array.from(out);
}
const f32 = (...values: number[]) => new Uint8Array(Float32Array.from(values).buffer);

describe('control-vector GGUF', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'tiller-gguf-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('round-trips bit-exact floats, layers and model hint', () => {
    const cv = sample();
    const back = readControlVectorGguf(writeControlVectorGguf(cv), 'sample.gguf');
    expect(back.modelHint).toBe('llama');
    expect(back.directions.map((d) => d.layer)).toEqual([3, 1, 15]);
    back.directions.forEach((d, i) => expect(bits(d.vector)).toEqual(bits(cv.directions[i].vector)));
    expect(back.metadata).toEqual({
      'general.architecture': 'controlvector',
      'controlvector.model_hint': 'llama',
      'controlvector.layer_count': 3,
    });
  });

  it('writes a file that @huggingface/gguf parses as a control vector', async () => {
    const cv = sample();
    const bytes = writeControlVectorGguf(cv);
    const file = path.join(tmp, 'sample.gguf');
    writeFileSync(file, bytes);
    const parsed = await gguf(file, { allowLocalFile: true, typedMetadata: true });
    const { metadata, tensorInfos, tensorDataOffset } = parsed as unknown as GGUFParseOutput<{ strict: false }>;
    const typed = parsed.typedMetadata as GGUFTypedMetadata;
    expect(metadata.version).toBe(3);
    expect(metadata['general.architecture']).toBe('controlvector');
    expect(metadata['controlvector.model_hint']).toBe('llama');
    expect(typed['controlvector.layer_count']).toEqual({ value: 3, type: GGUFValueType.INT32 });
    expect(tensorInfos.map((t) => [t.name, t.shape, t.dtype])).toEqual([
      ['direction.3', [5n], GGMLQuantizationType.F32],
      ['direction.1', [5n], GGMLQuantizationType.F32],
      ['direction.15', [5n], GGMLQuantizationType.F32],
    ]);
    // The bytes it locates are ours, and the file ends on the last tensor's padded end, as ggml reads it.
    tensorInfos.forEach((t, i) => {
      const start = Number(tensorDataOffset + t.offset);
      expect(bits(new Float32Array(bytes.slice(start, start + 20).buffer))).toEqual(bits(cv.directions[i].vector));
    });
    expect(bytes.length).toBe(Number(tensorDataOffset) + 3 * 32);
  });

  it('lays out one 2-element vector exactly as computed by hand', () => {
    const bytes = writeControlVectorGguf({ modelHint: 'llama', directions: [{ layer: 3, vector: Float32Array.from([1.5, -2]) }] });
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const text = (at: number, length: number) => Buffer.from(bytes.subarray(at, at + length)).toString('latin1');
    // header: magic 4 + version 4 + tensor_count 8 + kv_count 8 = 24
    expect(text(0, 4)).toBe('GGUF');
    expect(view.getUint32(4, true)).toBe(3);
    expect(view.getBigUint64(8, true)).toBe(1n);
    expect(view.getBigUint64(16, true)).toBe(3n);
    // kv 1 at 24: key len 8 + "general.architecture" 20 + type 4 + value len 8 + "controlvector" 13 = 53 → 77
    expect(view.getBigUint64(24, true)).toBe(20n);
    expect(text(32, 20)).toBe('general.architecture');
    expect(view.getUint32(52, true)).toBe(8); // STRING
    expect(view.getBigUint64(56, true)).toBe(13n);
    expect(text(64, 13)).toBe('controlvector');
    // kv 2 at 77: 8 + "controlvector.model_hint" 24 + 4 + 8 + "llama" 5 = 49 → 126
    expect(view.getBigUint64(77, true)).toBe(24n);
    expect(text(85, 24)).toBe('controlvector.model_hint');
    expect(view.getUint32(109, true)).toBe(8);
    expect(view.getBigUint64(113, true)).toBe(5n);
    expect(text(121, 5)).toBe('llama');
    // kv 3 at 126: 8 + "controlvector.layer_count" 25 + 4 + i32 4 = 41 → 167
    expect(view.getBigUint64(126, true)).toBe(25n);
    expect(text(134, 25)).toBe('controlvector.layer_count');
    expect(view.getUint32(159, true)).toBe(5); // INT32
    expect(view.getInt32(163, true)).toBe(1);
    // tensor info at 167: 8 + "direction.3" 11 + n_dims 4 + dim 8 + type 4 + offset 8 = 43 → 210
    expect(view.getBigUint64(167, true)).toBe(11n);
    expect(text(175, 11)).toBe('direction.3');
    expect(view.getUint32(186, true)).toBe(1);
    expect(view.getBigUint64(190, true)).toBe(2n);
    expect(view.getUint32(198, true)).toBe(0); // F32
    expect(view.getBigUint64(202, true)).toBe(0n);
    // padding 210 → 224 (next multiple of 32), data 224..232, padding to 256
    expect([...bytes.subarray(210, 224)]).toEqual(new Array(14).fill(0));
    expect(view.getFloat32(224, true)).toBe(1.5);
    expect(view.getFloat32(228, true)).toBe(-2);
    expect([...bytes.subarray(232)]).toEqual(new Array(24).fill(0));
    expect(bytes.length).toBe(256);
  });

  it('refuses block 0, saying why', () => {
    const cv: ControlVector = { modelHint: 'llama', directions: [{ layer: 0, vector: Float32Array.from([1, 2]) }] };
    expect(() => writeControlVectorGguf(cv)).toThrow(GgufError);
    expect(() => writeControlVectorGguf(cv)).toThrow(/llama\.cpp cannot load a direction for block 0.*choose another layer/);
  });

  it('refuses empty, unequal, duplicate or missing directions', () => {
    const write = (directions: ControlVector['directions']) => () => writeControlVectorGguf({ modelHint: 'llama', directions });
    expect(write([])).toThrow(/at least one direction/);
    expect(write([{ layer: 2, vector: new Float32Array(0) }])).toThrow(/layer 2 is empty/);
    expect(write([{ layer: 1, vector: new Float32Array(4) }, { layer: 2, vector: new Float32Array(3) }])).toThrow(/layer 2 has 3 values but layer 1's has 4/);
    expect(write([{ layer: 2, vector: new Float32Array(4) }, { layer: 2, vector: new Float32Array(4) }])).toThrow(/layer 2 has two directions/);
    expect(write([{ layer: -1, vector: new Float32Array(4) }])).toThrow(GgufError);
  });

  it('refuses truncated files, naming the file', () => {
    const bytes = writeControlVectorGguf(sample());
    // Cut inside the last tensor's data (its padding alone is not needed to read it).
    expect(() => readControlVectorGguf(bytes.subarray(0, bytes.length - 40), 'cut.gguf')).toThrow(
      /^cut\.gguf: the file is truncated: tensor "direction\.15" needs bytes \d+ to \d+ but the file has only \d+ bytes$/,
    );
    expect(() => readControlVectorGguf(bytes.subarray(0, 100), 'cut.gguf')).toThrow(/^cut\.gguf: the file is truncated: metadata key #1 needs 24 bytes at offset 85 but the file has only 100 bytes$/);
    expect(() => readControlVectorGguf(bytes.subarray(0, 2), 'cut.gguf')).toThrow(/cut\.gguf: the file is truncated/);
  });

  it('refuses a wrong magic and unsupported versions', () => {
    const bytes = writeControlVectorGguf(sample());
    const wrong = bytes.slice();
    wrong.set(Buffer.from('PK\x03\x04'));
    expect(() => readControlVectorGguf(wrong, 'vector.zip')).toThrow('vector.zip: not a GGUF file: it starts with "PK\\u0003\\u0004", not "GGUF"');
    const v4 = bytes.slice();
    new DataView(v4.buffer).setUint32(4, 4, true);
    expect(() => readControlVectorGguf(v4, 'v4.gguf')).toThrow(/v4\.gguf: GGUF version 4 is not supported/);
    const bigEndian = bytes.slice();
    new DataView(bigEndian.buffer).setUint32(4, 3, false);
    expect(() => readControlVectorGguf(bigEndian, 'be.gguf')).toThrow(/big-endian/);
    const v2 = buildGguf([{ name: 'direction.4', dims: [2], type: 0, data: f32(1, 2) }], 2);
    expect(readControlVectorGguf(v2).directions).toEqual([{ layer: 4, vector: Float32Array.from([1, 2]) }]);
  });

  it('refuses F16, 2-D, misnamed and mismatched tensors, naming the tensor', () => {
    const read = (tensors: Parameters<typeof buildGguf>[0]) => () => readControlVectorGguf(buildGguf(tensors), 'bad.gguf');
    expect(read([{ name: 'direction.2', dims: [4], type: 1, data: new Uint8Array(8) }])).toThrow(
      'bad.gguf: tensor "direction.2" is F16, but control-vector directions must be F32',
    );
    expect(read([{ name: 'direction.2', dims: [2, 2], type: 0, data: f32(1, 2, 3, 4) }])).toThrow(
      'bad.gguf: tensor "direction.2" has shape [2, 2], but a direction must be 1-D',
    );
    expect(read([{ name: 'blk.0.attn_norm.weight', dims: [2], type: 0, data: f32(1, 2) }])).toThrow(/tensor "blk\.0\.attn_norm\.weight" is not a control-vector direction/);
    expect(read([{ name: 'direction.1', dims: [2], type: 0, data: f32(1, 2) }, { name: 'direction.2', dims: [3], type: 0, data: f32(1, 2, 3) }])).toThrow(
      /tensor "direction\.2" has 3 values but "direction\.1" has 2/,
    );
    expect(read([])).toThrow(/no direction tensors/);
  });

  it('accepts trailing unit dimensions (as llama.cpp does) and a block-0 direction (Tiller can apply one)', () => {
    const bytes = buildGguf([
      { name: 'direction.0', dims: [2, 1], type: 0, data: f32(1, 2) },
      { name: 'direction.5', dims: [2], type: 0, data: f32(3, 4) },
    ]);
    const cv = readControlVectorGguf(bytes);
    expect(cv.modelHint).toBe('');
    expect(cv.directions).toEqual([
      { layer: 0, vector: Float32Array.from([1, 2]) },
      { layer: 5, vector: Float32Array.from([3, 4]) },
    ]);
  });
});
