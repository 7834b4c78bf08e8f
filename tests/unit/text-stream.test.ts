import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createRng } from '../../src/engine/generation/sampling.ts';
import { TokenTextStream } from '../../src/engine/model/text-stream.ts';
import { TextTokenizer } from '../../src/engine/model/tokenizer.ts';
import { sharedModel } from '../support/paths.ts';

function loadTokenizer(model: string): TextTokenizer {
  const read = (file: string) => JSON.parse(readFileSync(path.join(sharedModel(model), file), 'utf8')) as Record<string, unknown>;
  return TextTokenizer.fromFiles({ tokenizerJson: read('tokenizer.json'), tokenizerConfig: read('tokenizer_config.json') });
}

/** Streams `ids` through a TokenTextStream; returns each push's result, the flush, and the longest window decoded. */
function streamAll(ids: number[], decode: (ids: number[]) => string) {
  let longestWindow = 0;
  const stream = new TokenTextStream((window) => {
    longestWindow = Math.max(longestWindow, window.length);
    return decode(window);
  });
  const pieces = ids.map((id) => stream.push(id));
  const rest = stream.flush();
  return { pieces, rest, text: stream.text, longestWindow };
}

describe('TokenTextStream on stories260K', () => {
  const tokenizer = loadTokenizer('stories260K-hf');
  const decoders = {
    plain: (ids: number[]) => tokenizer.decode(ids),
    skipSpecial: (ids: number[]) => tokenizer.decode(ids, { skipSpecialTokens: true }),
  };
  const texts = [
    'Tom was very angry',
    'Le café est fermé. 日本 is Japan 😀, naïve  and   spaced',
    '😀😀 é日本😀é',
    ' leading space and trailing ',
  ];

  for (const [name, decode] of Object.entries(decoders)) {
    it(`adds up to the full decode (${name})`, () => {
      for (const text of texts) {
        const ids = tokenizer.encode(text);
        const { pieces, rest, text: streamed } = streamAll(ids, decode);
        expect(pieces.join('') + rest).toBe(decode(ids));
        expect(streamed).toBe(decode(ids));
      }
    });
  }

  it('holds back the bytes of a character until it is complete', () => {
    const ids = tokenizer.encode('a 😀 b', { addSpecialTokens: false });
    const pieces = streamAll(ids, decoders.plain).pieces;
    expect(ids.map((id) => tokenizer.tokenText(id))).toEqual(['▁a', '▁', '<0xF0>', '<0x9F>', '<0x98>', '<0x80>', '▁b']);
    expect(pieces).toEqual(['a', ' ', '', '', '', '😀', ' b']);
  });

  it('emits an unfinished character at flush as the full decode does', () => {
    const ids = tokenizer.encode('a 日', { addSpecialTokens: false }).slice(0, -1);
    const { pieces, rest } = streamAll(ids, decoders.plain);
    expect(pieces.some((piece) => piece.includes('\uFFFD'))).toBe(false);
    expect(rest).toContain('\uFFFD');
    expect(pieces.join('') + rest).toBe(tokenizer.decode(ids));
  });

  it('decodes a short window, not the whole text', () => {
    const ids = tokenizer.encode('Once upon a time, there was a little girl named Lily. She loved to play outside in the park. '.repeat(5));
    const { pieces, rest, longestWindow } = streamAll(ids, decoders.plain);
    expect(ids.length).toBeGreaterThan(100);
    expect(longestWindow).toBeLessThanOrEqual(3);
    expect(pieces.join('') + rest).toBe(tokenizer.decode(ids));
  });

  it('adds up to the full decode for arbitrary token sequences, byte tokens included', () => {
    expectStreamingMatchesDecode(tokenizer);
  });
});

describe('TokenTextStream on the 32000-token Llama tokenizer', () => {
  it('adds up to the full decode for arbitrary token sequences, byte tokens included', () => {
    expectStreamingMatchesDecode(loadTokenizer('tiny-random-llama-builder-fp16'));
  });
});

/** Random ids, half of them byte-fallback tokens (ids 3–258 in both vocabularies), so that characters split and break. */
function expectStreamingMatchesDecode(tokenizer: TextTokenizer): void {
  expect(tokenizer.tokenText(3)).toBe('<0x00>');
  const random = createRng(7);
  for (let trial = 0; trial < 200; trial++) {
    const ids = Array.from({ length: 40 }, () =>
      random() < 0.5 ? 3 + Math.floor(random() * 256) : Math.floor(random() * tokenizer.vocabSize),
    );
    for (const skipSpecialTokens of [false, true]) {
      const decode = (window: number[]) => tokenizer.decode(window, { skipSpecialTokens });
      const { pieces, rest } = streamAll(ids, decode);
      expect(pieces.join('') + rest).toBe(decode(ids));
    }
  }
}
