/**
 * The playground's settings: what is saved to localStorage on every change and restored on reload, and
 * what a shareable link carries. Stored state that does not parse is set aside under another key and
 * reported, never silently dropped.
 */

export type BackendChoice = 'auto' | 'webgpu' | 'wasm';

export interface Settings {
  /** Selected model: "local:<folder>" or "hub:<owner/name>". */
  model: string;
  /** The selected model as last loaded (empty: none): a reload loads it again by itself when no download is needed. */
  loadedModel: string;
  backend: BackendChoice;
  /** Fuse torch-export attention and rotary into ONNX Runtime's contrib ops at load (checked against the graph as published). */
  fuse: boolean;
  hubBaseUrl: string;
  hubId: string;
  presetId: string;
  layer: number | undefined;
  /** Relative strength: 1 adds a vector as long as a typical token residual at the layer. */
  strength: number;
  prompt: string;
  systemPrompt: string;
  temperature: number;
  topP: number;
  seed: number;
  maxNewTokens: number;
  steerPrompt: boolean;
  sweep: boolean;
  /** Add the direction, or remove its component from the residual (ablate) over a range of layers. */
  operation: 'add' | 'ablate';
  ablateFrom: number | undefined;
  ablateTo: number | undefined;
  /** A second direction's preset (empty: none) and its strength, set with the 2-D pad. */
  presetB: string;
  strengthB: number;
  /** Colour generated tokens by the persona meter. */
  meter: boolean;
}

/** What the steering panel sets and every generation reads. */
export type SteeringSettings = Pick<Settings, 'layer' | 'strength' | 'steerPrompt' | 'sweep' | 'temperature' | 'topP' | 'seed' | 'maxNewTokens' | 'operation' | 'ablateFrom' | 'ablateTo' | 'strengthB'>;

export const DEFAULT_HUB = 'https://huggingface.co';

export const DEFAULT_SETTINGS: Settings = {
  model: '',
  loadedModel: '',
  backend: 'auto',
  fuse: true,
  hubBaseUrl: DEFAULT_HUB,
  hubId: '',
  presetId: '',
  layer: undefined,
  strength: 0,
  prompt: '',
  systemPrompt: 'You are a helpful assistant.',
  temperature: 0.7,
  topP: 0.95,
  seed: 1,
  maxNewTokens: 48,
  steerPrompt: true,
  sweep: false,
  operation: 'add',
  ablateFrom: undefined,
  ablateTo: undefined,
  presetB: '',
  strengthB: 0,
  meter: true,
};

export const SETTINGS_KEY = 'tiller.settings';

interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/** The sampling numbers a person types, each with its rule in words: checked where typed and when read back. */
export const NUMBER_RULES = {
  temperature: { min: 0, max: 5, integer: false, says: 'Temperature is a number from 0 to 5' },
  topP: { min: Number.MIN_VALUE, max: 1, integer: false, says: 'Top-p is a number above 0, at most 1' },
  seed: { min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER, integer: true, says: 'The seed is a whole number' },
  maxNewTokens: { min: 1, max: 4096, integer: true, says: 'Max new tokens is a whole number from 1 to 4096' },
} as const;

/** Why a typed number cannot be used for `field`, or undefined when it can. */
export function numberProblem(field: keyof typeof NUMBER_RULES, value: unknown): string | undefined {
  const rule = NUMBER_RULES[field];
  const ok = typeof value === 'number' && Number.isFinite(value) && value >= rule.min && value <= rule.max && (!rule.integer || Number.isInteger(value));
  return ok ? undefined : rule.says;
}

const FIELD_CHECKS: { [K in keyof Settings]: (v: unknown) => boolean } = {
  model: (v) => typeof v === 'string',
  loadedModel: (v) => typeof v === 'string',
  backend: (v) => v === 'auto' || v === 'webgpu' || v === 'wasm',
  fuse: (v) => typeof v === 'boolean',
  hubBaseUrl: (v) => typeof v === 'string',
  hubId: (v) => typeof v === 'string',
  presetId: (v) => typeof v === 'string',
  layer: (v) => v === undefined || v === null || (Number.isInteger(v) && (v as number) >= 0),
  strength: (v) => typeof v === 'number' && Number.isFinite(v) && Math.abs(v) <= 10,
  prompt: (v) => typeof v === 'string',
  systemPrompt: (v) => typeof v === 'string',
  temperature: (v) => !numberProblem('temperature', v),
  topP: (v) => !numberProblem('topP', v),
  seed: (v) => !numberProblem('seed', v),
  maxNewTokens: (v) => !numberProblem('maxNewTokens', v),
  steerPrompt: (v) => typeof v === 'boolean',
  sweep: (v) => typeof v === 'boolean',
  operation: (v) => v === 'add' || v === 'ablate',
  ablateFrom: (v) => v === undefined || v === null || (Number.isInteger(v) && (v as number) >= 0),
  ablateTo: (v) => v === undefined || v === null || (Number.isInteger(v) && (v as number) >= 0),
  presetB: (v) => typeof v === 'string',
  strengthB: (v) => typeof v === 'number' && Number.isFinite(v) && Math.abs(v) <= 10,
  meter: (v) => typeof v === 'boolean',
};

export class SettingsError extends Error {}

/**
 * Validates stored settings: unknown fields are ignored, missing ones take defaults, and a field with an
 * unusable value takes its default alone (named in `dropped`); the rest of the record is kept.
 * Text that is not a JSON object throws.
 */
export function parseSettings(text: string): { settings: Settings; dropped: string[] } {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new SettingsError(`saved settings are not JSON (${(error as Error).message})`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) throw new SettingsError('saved settings are not an object');
  const record = data as Record<string, unknown>;
  const settings = { ...DEFAULT_SETTINGS } as Record<string, unknown>;
  const dropped: string[] = [];
  for (const [key, check] of Object.entries(FIELD_CHECKS)) {
    if (!(key in record)) continue;
    if (check(record[key])) settings[key] = record[key] ?? undefined;
    else dropped.push(`"${key}" (${JSON.stringify(record[key]) ?? 'undefined'})`);
  }
  return { settings: settings as unknown as Settings, dropped };
}

export interface LoadedSettings {
  settings: Settings;
  /** Set when stored settings were unusable in part or whole: what was wrong, and where the whole record was kept. */
  problem?: string;
}

export function loadSettings(storage: StorageLike, now = Date.now()): LoadedSettings {
  const text = storage.getItem(SETTINGS_KEY);
  if (text === null) return { settings: { ...DEFAULT_SETTINGS } };
  try {
    const { settings, dropped } = parseSettings(text);
    if (dropped.length === 0) return { settings };
    return { settings, problem: `saved setting ${dropped.join(', ')} had an unusable value and is back to its default; everything else was kept.` };
  } catch (error) {
    const aside = `${SETTINGS_KEY}.corrupt-${now}`;
    try {
      storage.setItem(aside, text);
    } catch {
      // The original stays where it was; it is overwritten only by the next save.
    }
    return { settings: { ...DEFAULT_SETTINGS }, problem: `${(error as Error).message}. They were kept under "${aside}" and defaults are used.` };
  }
}

export function saveSettings(storage: StorageLike, settings: Settings): string | undefined {
  try {
    storage.setItem(SETTINGS_KEY, JSON.stringify(settings));
    return undefined;
  } catch (error) {
    return `settings could not be saved: ${(error as Error).message}`;
  }
}

/** The part of the settings a shareable link carries: enough to open the same columns. */
export type SharedSettings = Partial<Pick<Settings, 'model' | 'presetId' | 'layer' | 'strength' | 'prompt' | 'operation' | 'ablateFrom' | 'ablateTo' | 'presetB' | 'strengthB' | 'temperature' | 'seed' | 'maxNewTokens'>>;

export function shareHash(settings: Settings, options: { present?: boolean } = {}): string {
  const params = new URLSearchParams();
  if (settings.model) params.set('model', settings.model);
  if (settings.presetId) params.set('preset', settings.presetId);
  if (settings.layer !== undefined) params.set('layer', String(settings.layer));
  params.set('strength', String(settings.strength));
  if (settings.prompt) params.set('prompt', settings.prompt);
  params.set('op', settings.operation);
  if (settings.operation === 'ablate') {
    if (settings.ablateFrom !== undefined) params.set('from', String(settings.ablateFrom));
    if (settings.ablateTo !== undefined) params.set('to', String(settings.ablateTo));
  }
  if (settings.presetB) {
    params.set('presetB', settings.presetB);
    params.set('strengthB', String(settings.strengthB));
  }
  params.set('temperature', String(settings.temperature));
  params.set('seed', String(settings.seed));
  params.set('tokens', String(settings.maxNewTokens));
  if (options.present) params.set('present', '1');
  return `#${params.toString()}`;
}

/** Reads a shared configuration from a URL hash; fields that do not parse (by the saved settings' checks) are left out. */
export function parseShareHash(hash: string): SharedSettings | undefined {
  const params = new URLSearchParams(hash.replace(/^#/, ''));
  const shared: Record<string, unknown> = {};
  const take = (param: string, key: keyof SharedSettings, value: unknown) => {
    if (params.has(param) && FIELD_CHECKS[key](value)) shared[key] = value;
  };
  const number = (param: string) => (params.get(param)?.trim() ? Number(params.get(param)) : NaN);
  const model = params.get('model');
  if (model && /^(local|hub):./.test(model)) shared.model = model;
  if (params.get('preset')) shared.presetId = params.get('preset');
  take('layer', 'layer', number('layer'));
  take('strength', 'strength', number('strength'));
  take('prompt', 'prompt', params.get('prompt'));
  take('op', 'operation', params.get('op'));
  take('from', 'ablateFrom', number('from'));
  take('to', 'ablateTo', number('to'));
  take('presetB', 'presetB', params.get('presetB'));
  take('strengthB', 'strengthB', number('strengthB'));
  take('temperature', 'temperature', number('temperature'));
  take('seed', 'seed', number('seed'));
  take('tokens', 'maxNewTokens', number('tokens'));
  return Object.keys(shared).length > 0 ? (shared as SharedSettings) : undefined;
}

/** Whether a URL hash asks to open in presenter mode (`present=1`), a flag a shared link may carry. */
export function parsePresentFlag(hash: string): boolean {
  return new URLSearchParams(hash.replace(/^#/, '')).get('present') === '1';
}
