import { describe, expect, it } from 'vitest';
import { DEFAULT_SETTINGS, SETTINGS_KEY, loadSettings, parsePresentFlag, parseShareHash, saveSettings, shareHash } from '../../src/lib/settings.ts';

const memory = (entries: Record<string, string> = {}) => {
  const data = new Map(Object.entries(entries));
  return { data, getItem: (k: string) => data.get(k) ?? null, setItem: (k: string, v: string) => void data.set(k, v) };
};

describe('playground settings', () => {
  it('round-trips through storage and fills missing fields with defaults', () => {
    const storage = memory();
    saveSettings(storage, { ...DEFAULT_SETTINGS, strength: -0.4, prompt: 'Lily', layer: 3 });
    expect(loadSettings(storage).settings).toEqual({ ...DEFAULT_SETTINGS, strength: -0.4, prompt: 'Lily', layer: 3 });
    expect(loadSettings(memory({ [SETTINGS_KEY]: '{"seed": 5}' })).settings).toEqual({ ...DEFAULT_SETTINGS, seed: 5 });
  });

  it('sets corrupt settings aside under another key and says what was wrong', () => {
    for (const text of ['{"strength":', '{"strength": "lots"}', '[1]']) {
      const storage = memory({ [SETTINGS_KEY]: text });
      const loaded = loadSettings(storage, 1234);
      expect(loaded.settings).toEqual(DEFAULT_SETTINGS);
      expect(loaded.problem).toContain(`${SETTINGS_KEY}.corrupt-1234`);
      expect(storage.data.get(`${SETTINGS_KEY}.corrupt-1234`)).toBe(text);
    }
    expect(loadSettings(memory({ [SETTINGS_KEY]: '{"strength": "lots"}' })).problem).toContain('"strength"');
  });

  const sampling = { operation: 'add', temperature: DEFAULT_SETTINGS.temperature, seed: DEFAULT_SETTINGS.seed, maxNewTokens: DEFAULT_SETTINGS.maxNewTokens };

  it('a share link carries model, preset, layer, strength, prompt and sampling', () => {
    const settings = { ...DEFAULT_SETTINGS, model: 'local:stories260K-hf', presetId: 'happy-sad-stories', layer: 2, strength: 0.35, prompt: 'Once upon a time & more #1' };
    expect(parseShareHash(shareHash(settings))).toEqual({ model: 'local:stories260K-hf', presetId: 'happy-sad-stories', layer: 2, strength: 0.35, prompt: 'Once upon a time & more #1', ...sampling });
    expect(parseShareHash('#strength=nope&layer=-1&model=elsewhere')).toBeUndefined();
    expect(parseShareHash('')).toBeUndefined();
  });

  it('a share link carries the operation with its range, and the second direction', () => {
    const ablate = { ...DEFAULT_SETTINGS, model: 'hub:owner/name', operation: 'ablate' as const, ablateFrom: 1, ablateTo: 3, seed: 9, maxNewTokens: 20, temperature: 0 };
    expect(parseShareHash(shareHash(ablate))).toEqual({ model: 'hub:owner/name', strength: 0, operation: 'ablate', ablateFrom: 1, ablateTo: 3, temperature: 0, seed: 9, maxNewTokens: 20 });
    const two = { ...DEFAULT_SETTINGS, presetId: 'happy-sad-stories', presetB: 'formal-casual', strengthB: -0.2 };
    expect(parseShareHash(shareHash(two))).toMatchObject({ operation: 'add', presetB: 'formal-casual', strengthB: -0.2 });
    expect(parseShareHash('#op=delete&from=-2&tokens=0&seed=1.5')).toBeUndefined();
  });

  it('a share link can ask to open in presenter mode', () => {
    const settings = { ...DEFAULT_SETTINGS, model: 'local:stories260K-hf', strength: 0.3 };
    expect(parsePresentFlag(shareHash(settings))).toBe(false);
    expect(parsePresentFlag(shareHash(settings, { present: true }))).toBe(true);
    expect(parseShareHash(shareHash(settings, { present: true }))).toEqual({ model: 'local:stories260K-hf', strength: 0.3, ...sampling });
    expect(parsePresentFlag('#present=1')).toBe(true);
    expect(parsePresentFlag('#present=0')).toBe(false);
  });
});
