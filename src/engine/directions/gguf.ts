/**
 * llama.cpp control vectors as GGUF files, both ways.
 *
 * Layout (GGUF v3, little-endian, ggml `docs/gguf.md`): "GGUF", u32 version, u64 tensor_count,
 * u64 kv_count, the key/values, the tensor infos (name, u32 n_dims, u64 dims, u32 ggml type, u64 offset
 * into the data section), zero padding to `general.alignment` (default 32), then the tensor data, each
 * tensor padded to the alignment too (ggml's reader reads the padded size of the last tensor as well).
 *
 * A control vector is one F32 1-D tensor `direction.<k>` per layer, k the 0-based index of the decoder
 * block whose output the vector is added to: llama.cpp's `common_control_vector_load_one` stores
 * direction.k at slot k-1 and `llama_adapter_cvec::apply` gives slot k-1 to block k, whose output
 * (`l_out`) `build_cvec(cur, k)` shifts; repeng wraps `model.layers[k]` the same way. That loader refuses
 * `direction.0` and then skips the whole file, so the writer refuses block 0. The loader reads no
 * metadata; the keys below are what llama.cpp's `cvector-generator` and repeng's `export_gguf` write.
 */
import { ByteChunks } from '../byte-chunks.ts';

export interface ControlVector {
  /** Architecture the vector was made for, e.g. "llama", "qwen2" (llama.cpp: the model's general.architecture). */
  modelHint: string;
  /** layer = 0-based decoder block whose output the vector is added to, as in the file's `direction.<layer>`. */
  directions: { layer: number; vector: Float32Array }[];
}

export class GgufError extends Error {}

const ARCHITECTURE = 'controlvector';
const DEFAULT_ALIGNMENT = 32;
const GGML_F32 = 0;
/** GGUF metadata value types (docs/gguf.md `gguf_metadata_value_type`). */
const T = { U8: 0, I8: 1, U16: 2, I16: 3, U32: 4, I32: 5, F32: 6, BOOL: 7, STRING: 8, ARRAY: 9, U64: 10, I64: 11, F64: 12 } as const;
/** Names for the ggml tensor types a wrong file is likely to hold, for error messages. */
const GGML_TYPE_NAMES: Record<number, string> = { 0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 6: 'Q5_0', 7: 'Q5_1', 8: 'Q8_0', 24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64', 30: 'BF16' };

// Floats are copied as bytes so that every bit (NaN payloads, -0) survives; GGUF is little-endian.
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const padTo = (n: number, alignment: number) => Math.ceil(n / alignment) * alignment;

function floatBytes(vector: Float32Array): Uint8Array {
  const bytes = new Uint8Array(vector.buffer, vector.byteOffset, vector.byteLength).slice();
  return LITTLE_ENDIAN_HOST ? bytes : swap32(bytes);
}

function swap32(bytes: Uint8Array): Uint8Array {
  for (let i = 0; i < bytes.length; i += 4) bytes.subarray(i, i + 4).reverse();
  return bytes;
}

/** Appends little-endian fields; the header is small, so parts are concatenated once at the end. */
class ByteWriter extends ByteChunks {
  private field(size: number, set: (view: DataView) => void): void {
    const part = new Uint8Array(size);
    set(new DataView(part.buffer));
    this.bytes(part);
  }
  bytes(part: Uint8Array): void {
    this.push(part);
  }
  u32(value: number): void { this.field(4, (v) => v.setUint32(0, value, true)); }
  i32(value: number): void { this.field(4, (v) => v.setInt32(0, value, true)); }
  u64(value: number): void { this.field(8, (v) => v.setBigUint64(0, BigInt(value), true)); }
  string(value: string): void {
    const utf8 = new TextEncoder().encode(value);
    this.u64(utf8.length);
    this.bytes(utf8);
  }
  pad(alignment: number): void { this.bytes(new Uint8Array(padTo(this.length, alignment) - this.length)); }

}

export function writeControlVectorGguf(cv: ControlVector): Uint8Array {
  const { directions } = cv;
  if (directions.length === 0) throw new GgufError('a control vector needs at least one direction');
  const size = directions[0].vector.length;
  const layers = new Set<number>();
  for (const { layer, vector } of directions) {
    if (!Number.isSafeInteger(layer) || layer < 0) throw new GgufError(`layer ${layer} is not a block index ≥ 0`);
    if (layer === 0) {
      throw new GgufError(
        'llama.cpp cannot load a direction for block 0 (its loader rejects "direction.0" and then skips the whole file): choose another layer',
      );
    }
    if (layers.has(layer)) throw new GgufError(`layer ${layer} has two directions (GGUF tensor names must be unique)`);
    layers.add(layer);
    if (vector.length === 0) throw new GgufError(`the direction for layer ${layer} is empty`);
    if (vector.length !== size) {
      throw new GgufError(`the direction for layer ${layer} has ${vector.length} values but layer ${directions[0].layer}'s has ${size}: all must have the model's hidden size`);
    }
  }

  const w = new ByteWriter();
  w.bytes(new TextEncoder().encode('GGUF'));
  w.u32(3);
  w.u64(directions.length);
  w.u64(3);
  w.string('general.architecture');
  w.u32(T.STRING);
  w.string(ARCHITECTURE);
  w.string(`${ARCHITECTURE}.model_hint`);
  w.u32(T.STRING);
  w.string(cv.modelHint);
  // llama.cpp's cvector-generator writes i32 (gguf_set_val_i32), repeng u32; no loader reads it.
  w.string(`${ARCHITECTURE}.layer_count`);
  w.u32(T.I32);
  w.i32(directions.length);
  const stride = padTo(size * 4, DEFAULT_ALIGNMENT); // ggml requires offset = running sum of padded sizes
  directions.forEach(({ layer }, index) => {
    w.string(`direction.${layer}`);
    w.u32(1);
    w.u64(size);
    w.u32(GGML_F32);
    w.u64(index * stride);
  });
  w.pad(DEFAULT_ALIGNMENT);
  for (const { vector } of directions) {
    w.bytes(floatBytes(vector));
    w.pad(DEFAULT_ALIGNMENT);
  }
  return w.join();
}

/** Bounds-checked little-endian reads; every overrun is reported as a truncated file. */
class ByteReader {
  pos = 0;
  private view: DataView;
  private utf8 = new TextDecoder('utf-8', { fatal: true });
  constructor(
    readonly bytes: Uint8Array,
    private fail: (message: string) => never,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  take(size: number, what: string): number {
    if (this.pos + size > this.bytes.length) {
      this.fail(`the file is truncated: ${what} needs ${size} bytes at offset ${this.pos} but the file has only ${this.bytes.length} bytes`);
    }
    this.pos += size;
    return this.pos - size;
  }
  u32(what: string): number { return this.view.getUint32(this.take(4, what), true); }
  /** u64 as a number: counts and sizes beyond 2^53 cannot be real in a file we hold in memory. */
  u64(what: string): number {
    const value = this.view.getBigUint64(this.take(8, what), true);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} is ${value}, which cannot be right`);
    return Number(value);
  }
  string(what: string): string {
    const length = this.u64(`the length of ${what}`);
    const at = this.take(length, what);
    try {
      return this.utf8.decode(this.bytes.subarray(at, at + length));
    } catch {
      return this.fail(`${what} at offset ${at} is not valid UTF-8`);
    }
  }
  value(type: number, what: string, depth = 0): unknown {
    const v = this.view;
    switch (type) {
      case T.U8: return v.getUint8(this.take(1, what));
      case T.I8: return v.getInt8(this.take(1, what));
      case T.U16: return v.getUint16(this.take(2, what), true);
      case T.I16: return v.getInt16(this.take(2, what), true);
      case T.U32: return v.getUint32(this.take(4, what), true);
      case T.I32: return v.getInt32(this.take(4, what), true);
      case T.F32: return v.getFloat32(this.take(4, what), true);
      case T.BOOL: return v.getUint8(this.take(1, what)) !== 0;
      case T.STRING: return this.string(what);
      case T.U64: return safeNumber(v.getBigUint64(this.take(8, what), true));
      case T.I64: return safeNumber(v.getBigInt64(this.take(8, what), true));
      case T.F64: return v.getFloat64(this.take(8, what), true);
      case T.ARRAY: {
        if (depth > 8) return this.fail(`${what} nests arrays too deeply`);
        const itemType = this.u32(`the item type of ${what}`);
        const count = this.u64(`the length of ${what}`);
        const items: unknown[] = [];
        for (let i = 0; i < count; i++) items.push(this.value(itemType, `${what}[${i}]`, depth + 1));
        return items;
      }
      default:
        return this.fail(`${what} has unknown GGUF value type ${type}`);
    }
  }
}

const safeNumber = (value: bigint): number | bigint => (value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value);

export function readControlVectorGguf(bytes: Uint8Array, fileName = 'GGUF file'): ControlVector & { metadata: Record<string, unknown> } {
  const fail = (message: string): never => {
    throw new GgufError(`${fileName}: ${message}`);
  };
  const r = new ByteReader(bytes, fail);
  const magic = String.fromCharCode(...bytes.subarray(r.take(4, 'the GGUF magic'), 4));
  if (magic !== 'GGUF') fail(`not a GGUF file: it starts with ${JSON.stringify(magic)}, not "GGUF"`);
  const version = r.u32('the version');
  if ((version & 0xffff) === 0) fail(`the version reads as ${version}: a big-endian GGUF file, which is not supported`);
  // v2 and v3 share the little-endian layout (v1 had 32-bit counts; v3 only added big-endian files).
  if (version !== 2 && version !== 3) fail(`GGUF version ${version} is not supported (expected 2 or 3)`);
  const tensorCount = r.u64('the tensor count');
  const kvCount = r.u64('the key/value count');

  const entries = new Map<string, unknown>();
  for (let i = 0; i < kvCount; i++) {
    const key = r.string(`metadata key #${i}`);
    if (entries.has(key)) fail(`metadata key "${key}" appears twice`);
    entries.set(key, r.value(r.u32(`the type of "${key}"`), `the value of "${key}"`));
  }
  const metadata = Object.fromEntries(entries); // defines own properties, so a "__proto__" key is harmless
  const alignment = metadata['general.alignment'] ?? DEFAULT_ALIGNMENT;
  if (typeof alignment !== 'number' || !Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0) {
    fail(`general.alignment is ${String(alignment)}, not a power of two`);
  }
  const architecture = metadata['general.architecture'];
  const modelHint = metadata[`${ARCHITECTURE}.model_hint`] ?? '';
  if (typeof modelHint !== 'string') fail(`${ARCHITECTURE}.model_hint is not a string`);
  // A model or LoRA file fails on its first tensor; say what the file is rather than only that.
  const notCv = typeof architecture === 'string' && architecture !== ARCHITECTURE ? ` (general.architecture is "${architecture}": this is not a control vector)` : '';

  const infos: { name: string; dims: number[]; type: number; offset: number }[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = r.string(`the name of tensor #${i}`);
    const nDims = r.u32(`the rank of tensor "${name}"`);
    if (nDims > 4) fail(`tensor "${name}" has ${nDims} dimensions (GGUF allows at most 4)`);
    const dims = Array.from({ length: nDims }, (_, d) => r.u64(`dimension ${d} of tensor "${name}"`));
    infos.push({ name, dims, type: r.u32(`the type of tensor "${name}"`), offset: r.u64(`the offset of tensor "${name}"`) });
  }
  if (infos.length === 0) fail('it holds no direction tensors');
  const dataStart = padTo(r.pos, alignment as number);

  const directions: ControlVector['directions'] = [];
  for (const { name, dims, type, offset } of infos) {
    const match = /^direction\.(\d+)$/.exec(name);
    if (!match) fail(`tensor "${name}" is not a control-vector direction (expected "direction.<layer>")${notCv}`);
    const layer = Number(match![1]);
    if (!Number.isSafeInteger(layer)) fail(`tensor "${name}" names an impossible layer`);
    if (directions.some((d) => d.layer === layer)) fail(`layer ${layer} appears twice`);
    if (type !== GGML_F32) fail(`tensor "${name}" is ${GGML_TYPE_NAMES[type] ?? `ggml type ${type}`}, but control-vector directions must be F32`);
    // Trailing 1s do not add a dimension (ggml_n_dims, which llama.cpp's loader checks, ignores them).
    if (dims.length === 0 || dims.slice(1).some((d) => d !== 1)) fail(`tensor "${name}" has shape [${dims.join(', ')}], but a direction must be 1-D`);
    const size = dims[0];
    if (size === 0) fail(`tensor "${name}" is empty`);
    if (directions.length > 0 && size !== directions[0].vector.length) {
      fail(`tensor "${name}" has ${size} values but "direction.${directions[0].layer}" has ${directions[0].vector.length}: all directions must have the same size`);
    }
    if (offset % (alignment as number) !== 0) fail(`tensor "${name}" starts at data offset ${offset}, which is not a multiple of the alignment ${alignment}`);
    const start = dataStart + offset;
    const end = start + size * 4;
    if (end > bytes.length) fail(`the file is truncated: tensor "${name}" needs bytes ${start} to ${end} but the file has only ${bytes.length} bytes`);
    const raw = bytes.slice(start, end);
    const vector = new Float32Array((LITTLE_ENDIAN_HOST ? raw : swap32(raw)).buffer);
    // As the JSON format does: a NaN or Inf would otherwise surface later as a "zero length" or another layer's fault.
    const bad = vector.findIndex((value) => !Number.isFinite(value));
    if (bad >= 0) fail(`tensor "${name}" (layer ${layer}) holds ${vector[bad]} at index ${bad}: every value of a direction must be finite`);
    directions.push({ layer, vector });
  }
  return { modelHint: modelHint as string, directions, metadata };
}
