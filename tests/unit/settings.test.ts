import { describe, expect, it } from 'vitest';
import { DEFAULT_SETTINGS, SETTINGS_KEY, loadSettings, numberProblem, parsePresentFlag, parseShareHash, saveSettings, shareHash } from '../../src/lib/settings.ts';

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
    // Fusion is on unless turned off, and turning it off is remembered.
    expect(DEFAULT_SETTINGS.fuse).toBe(true);
    expect(loadSettings(memory({ [SETTINGS_KEY]: '{"fuse": false}' })).settings.fuse).toBe(false);
  });

  it('sets corrupt settings aside under another key and says what was wrong', () => {
    for (const text of ['{"strength":', '[1]', 'null']) {
      const storage = memory({ [SETTINGS_KEY]: text });
      const loaded = loadSettings(storage, 1234);
      expect(loaded.settings).toEqual(DEFAULT_SETTINGS);
      expect(loaded.problem).toContain(`${SETTINGS_KEY}.corrupt-1234`);
      expect(storage.data.get(`${SETTINGS_KEY}.corrupt-1234`)).toBe(text);
    }
  });

  it('drops only the unusable field of saved settings, keeping everything else (issue 14)', () => {
    const good = { ...DEFAULT_SETTINGS, model: 'local:stories260K-hf', prompt: 'Lily', systemPrompt: 'Be kind.', presetId: 'happy-sad-stories', layer: 3, strength: 0.4 };
    const bad: [string, unknown][] = [['seed', null], ['temperature', -1], ['topP', 0], ['topP', 7], ['maxNewTokens', 0], ['maxNewTokens', -5], ['maxNewTokens', 100000], ['seed', 1.5], ['strength', 'lots'], ['fuse', 'yes']];
    for (const [field, value] of bad) {
      const storage = memory({ [SETTINGS_KEY]: JSON.stringify({ ...good, [field]: value }) });
      const loaded = loadSettings(storage, 1234);
      expect(loaded.settings).toEqual({ ...good, [field]: DEFAULT_SETTINGS[field as keyof typeof DEFAULT_SETTINGS] });
      expect(loaded.problem).toContain(`"${field}" (${JSON.stringify(value)})`);
      expect(loaded.problem).toContain('everything else was kept');
    }
  });

  it('says why a typed sampling number cannot be used, and accepts the edges', () => {
    expect(numberProblem('seed', null)).toBe('The seed is a whole number');
    expect(numberProblem('seed', 1.5)).toBe('The seed is a whole number');
    expect(numberProblem('temperature', -1)).toMatch(/from 0 to 5/);
    expect(numberProblem('topP', 0)).toMatch(/above 0/);
    expect(numberProblem('topP', 7)).toMatch(/at most 1/);
    expect(numberProblem('maxNewTokens', 100000)).toMatch(/from 1 to 4096/);
    expect(numberProblem('maxNewTokens', Number.NaN)).toMatch(/from 1 to 4096/);
    for (const [field, value] of [['temperature', 0], ['temperature', 5], ['topP', 1], ['seed', -3], ['maxNewTokens', 1], ['maxNewTokens', 4096]] as const) {
      expect(numberProblem(field, value)).toBeUndefined();
    }
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
