/**
 * Protocol-buffer wire format, just enough for ONNX: walk fields as byte ranges, write new ones.
 * Untouched fields are never decoded into objects, so re-encoding keeps them byte for byte
 * (including fields this code has never heard of) and weights are never copied.
 */
import { ByteChunks } from '../byte-chunks.ts';

export const WIRE_VARINT = 0;
export const WIRE_FIXED64 = 1;
export const WIRE_BYTES = 2;
export const WIRE_FIXED32 = 5;

export class ProtoError extends Error {}

/** One field: its whole extent (tag included) and, for length-delimited fields, the payload. */
export interface Field {
  number: number;
  wire: number;
  start: number;
  end: number;
  /** Payload range for WIRE_BYTES; the value's bytes otherwise. */
  valueStart: number;
  valueEnd: number;
  /** Decoded value for WIRE_VARINT (signed 64-bit, as a JS number). */
  varint: number;
}

export function readVarint(buf: Uint8Array, pos: number, end: number): [value: number, next: number] {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw new ProtoError(`a number runs past the end of its message at byte ${pos}`);
    const byte = buf[pos++];
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      // Ten-byte varints are negative int64s (two's complement); doubles lose that, so redo it exactly.
      if (i === 9 || value >= 2 ** 63) return [negativeVarint(buf, pos - i - 1, pos), pos];
      return [value, pos];
    }
    scale *= 128;
  }
  throw new ProtoError(`a number longer than 10 bytes at byte ${pos}`);
}

function negativeVarint(buf: Uint8Array, start: number, end: number): number {
  let value = 0n;
  for (let pos = end - 1; pos >= start; pos--) value = (value << 7n) | BigInt(buf[pos] & 0x7f);
  return Number(BigInt.asIntN(64, value));
}

/** The fields of the message in buf[start, end), in order. */
export function* fields(buf: Uint8Array, start = 0, end = buf.length): Generator<Field> {
  let pos = start;
  while (pos < end) {
    const fieldStart = pos;
    const [tag, afterTag] = readVarint(buf, pos, end);
    const number = Math.floor(tag / 8);
    const wire = tag & 7;
    let valueStart = afterTag;
    let valueEnd: number;
    let varint = 0;
    if (wire === WIRE_VARINT) {
      [varint, valueEnd] = readVarint(buf, afterTag, end);
    } else if (wire === WIRE_BYTES) {
      const [length, payloadStart] = readVarint(buf, afterTag, end);
      if (length < 0) throw new ProtoError(`field at byte ${fieldStart} declares a negative length`);
      valueStart = payloadStart;
      valueEnd = payloadStart + length;
    } else if (wire === WIRE_FIXED64) {
      valueEnd = afterTag + 8;
    } else if (wire === WIRE_FIXED32) {
      valueEnd = afterTag + 4;
    } else {
      throw new ProtoError(`unknown wire type ${wire} at byte ${fieldStart}`);
    }
    if (number === 0 || valueEnd > end) {
      throw new ProtoError(`field ${number} at byte ${fieldStart} runs to byte ${valueEnd}, past the end of its message (${end})`);
    }
    pos = valueEnd;
    yield { number, wire, start: fieldStart, end: valueEnd, valueStart, valueEnd, varint };
  }
}

const utf8Decoder = new TextDecoder();
const utf8Encoder = new TextEncoder();

export function fieldString(buf: Uint8Array, field: Field): string {
  return utf8Decoder.decode(buf.subarray(field.valueStart, field.valueEnd));
}

/** Values of a repeated integer field, packed or not. */
export function pushInts(buf: Uint8Array, field: Field, into: number[]): void {
  if (field.wire === WIRE_VARINT) {
    into.push(field.varint);
    return;
  }
  for (let pos = field.valueStart; pos < field.valueEnd; ) {
    const [value, next] = readVarint(buf, pos, field.valueEnd);
    into.push(value);
    pos = next;
  }
}

export function fieldFloat32(buf: Uint8Array, field: Field): number {
  return new DataView(buf.buffer, buf.byteOffset + field.valueStart, 4).getFloat32(0, true);
}

/** Builds a message from new fields and raw slices of old ones. */
export class ProtoWriter {
  private readonly chunks = new ByteChunks();

  raw(bytes: Uint8Array): this {
    this.chunks.push(bytes);
    return this;
  }

  varint(value: number): this {
    const bytes: number[] = [];
    if (value < 0) {
      let big = BigInt.asUintN(64, BigInt(value));
      while (big >= 0x80n) {
        bytes.push(Number(big & 0x7fn) | 0x80);
        big >>= 7n;
      }
      bytes.push(Number(big));
    } else {
      while (value >= 0x80) {
        bytes.push((value % 128) | 0x80);
        value = Math.floor(value / 128);
      }
      bytes.push(value);
    }
    return this.raw(Uint8Array.from(bytes));
  }

  tag(number: number, wire: number): this {
    return this.varint(number * 8 + wire);
  }

  int(number: number, value: number): this {
    return this.tag(number, WIRE_VARINT).varint(value);
  }

  bytes(number: number, payload: Uint8Array): this {
    return this.tag(number, WIRE_BYTES).varint(payload.length).raw(payload);
  }

  string(number: number, value: string): this {
    return this.bytes(number, utf8Encoder.encode(value));
  }

  message(number: number, build: (writer: ProtoWriter) => void): this {
    const child = new ProtoWriter();
    build(child);
    return this.bytes(number, child.finish());
  }

  finish(): Uint8Array {
    return this.chunks.join();
  }
}
