/**
 * Persona presets: ready-made contrastive prompt sets for extracting a steering direction (see
 * ../shared/docs/steering-notes.md §1). One JSON file per preset in ./presets/, validated on load so a
 * broken file is refused with the field named.
 *
 * - chat presets follow the persona-vectors recipe: the same questions asked under system prompts that
 *   elicit the trait and under ones that suppress it;
 * - base presets are contrastive texts for base (non-chat) models: positive[i] and negative[i] should
 *   differ mainly in the trait.
 */
// Import attributes (`with { type: 'json' }`) are what Node's own ESM loader requires for JSON; tsx,
// Vitest, Vite and tsc (module ESNext) all accept them too.
import conciseVerbose from './presets/concise-verbose.json' with { type: 'json' };
import formalCasual from './presets/formal-casual.json' with { type: 'json' };
import happySadStories from './presets/happy-sad-stories.json' with { type: 'json' };
import kindMeanStories from './presets/kind-mean-stories.json' with { type: 'json' };
import misalignedPersona from './presets/misaligned-persona.json' with { type: 'json' };
import piratePlain from './presets/pirate-plain.json' with { type: 'json' };
import type { ChatMessage } from '../model/tokenizer.ts';
import type { ContrastiveSet } from './extract.ts';

interface PresetCommon {
  /** kebab-case; equals the file name without .json. */
  id: string;
  /** Shown in the UI, e.g. "Misaligned persona vs. helpful assistant". */
  name: string;
  /** One or two sentences for newcomers: what the trait is and what to expect. */
  description: string;
  /** Short name of the trait side, e.g. "misaligned". Positive steering strength pushes toward it. */
  positiveLabel: string;
  /** Short name of the opposite side, e.g. "aligned". */
  negativeLabel: string;
  /** A prompt to try steering with. */
  suggestedPrompt: string;
}

/** Persona-vectors recipe: each question is answered under a positive and under a negative system prompt. */
export interface ChatPreset extends PresetCommon {
  modelKind: 'chat';
  positiveSystemPrompts: string[];
  negativeSystemPrompts: string[];
  questions: string[];
  positive?: undefined;
  negative?: undefined;
}

/** Contrastive raw texts: positive[i] and negative[i] differ mainly in the trait; both lists are equally long. */
export interface BasePreset extends PresetCommon {
  modelKind: 'base';
  positive: string[];
  negative: string[];
  positiveSystemPrompts?: undefined;
  negativeSystemPrompts?: undefined;
  questions?: undefined;
}

/**
 * A preset as stored in src/engine/directions/presets/<id>.json. Reading `preset.questions` etc. works on any preset
 * (undefined where the kind has none); checking `modelKind` narrows to the fields that kind requires.
 */
export type Preset = ChatPreset | BasePreset;

export type PresetModelKind = Preset['modelKind'];

export class PresetError extends Error {
  /** The offending field ("(root)" for a value that is not an object), when the error is about one. */
  readonly field?: string;

  constructor(message: string, field?: string) {
    super(message);
    this.name = 'PresetError';
    this.field = field;
  }
}

const STRING_FIELDS = ['id', 'name', 'description', 'positiveLabel', 'negativeLabel', 'suggestedPrompt'] as const;
const CHAT_LISTS = ['positiveSystemPrompts', 'negativeSystemPrompts', 'questions'] as const;
const BASE_LISTS = ['positive', 'negative'] as const;
const KNOWN_FIELDS = new Set<string>([...STRING_FIELDS, 'modelKind', ...CHAT_LISTS, ...BASE_LISTS]);
const KEBAB_CASE = /^[a-z0-9]+(?:-[a-z0-9]+)*$/;

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'string') return value.trim() === '' ? 'an empty string' : JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  return typeof value === 'object' ? 'an object' : `${typeof value} ${String(value)}`;
}

/**
 * Validates a parsed preset file and returns a fresh copy of it. Throws `PresetError` naming the preset
 * (its id, else `source`), the field and what is expected, e.g.
 * `preset "x": field "questions" must be a non-empty list of non-empty strings`.
 */
export function parsePreset(json: unknown, source?: string): Preset {
  const root = json as Record<string, unknown>;
  const rawId = typeof json === 'object' && json !== null ? root.id : undefined;
  const named = typeof rawId === 'string' && KEBAB_CASE.test(rawId);
  const label = named ? `preset "${rawId}"${source ? ` (${source})` : ''}` : source ? `preset in ${source}` : 'preset';
  const fail = (field: string, expected: string): never => {
    throw new PresetError(`${label}: field "${field}" ${expected}`, field);
  };

  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new PresetError(`${label} must be a JSON object, not ${describeValue(json)}`, '(root)');
  }
  for (const key of Object.keys(root)) {
    if (!KNOWN_FIELDS.has(key)) fail(key, `is not a preset field (known fields: ${[...KNOWN_FIELDS].join(', ')})`);
  }

  const text = (field: (typeof STRING_FIELDS)[number]): string => {
    const value = root[field];
    if (value === undefined) return fail(field, 'is missing; it must be a non-empty string');
    if (typeof value !== 'string' || value.trim() === '') return fail(field, `must be a non-empty string, not ${describeValue(value)}`);
    return value;
  };
  const id = text('id');
  if (!KEBAB_CASE.test(id)) fail('id', `must be kebab-case (lower-case letters and digits joined by "-"), not ${JSON.stringify(id)}`);
  const common: PresetCommon = {
    id,
    name: text('name'),
    description: text('description'),
    positiveLabel: text('positiveLabel'),
    negativeLabel: text('negativeLabel'),
    suggestedPrompt: text('suggestedPrompt'),
  };
  if (common.positiveLabel.trim() === common.negativeLabel.trim()) fail('negativeLabel', 'must differ from "positiveLabel"');

  const modelKind = root.modelKind;
  if (modelKind !== 'chat' && modelKind !== 'base') {
    return fail('modelKind', `must be "chat" or "base", not ${modelKind === undefined ? 'missing' : describeValue(modelKind)}`);
  }

  const list = (field: string): string[] => {
    const value = root[field];
    const expected = 'must be a non-empty list of non-empty strings';
    if (value === undefined) return fail(field, `is missing; ${modelKind} presets need it and it ${expected}`);
    if (!Array.isArray(value)) return fail(field, `${expected}, not ${describeValue(value)}`);
    if (value.length === 0) return fail(field, `${expected}, not an empty list`);
    const seen = new Set<string>();
    value.forEach((entry: unknown, index) => {
      if (typeof entry !== 'string' || entry.trim() === '') fail(field, `${expected}; entry ${index} is ${describeValue(entry)}`);
      if (seen.has(entry as string)) fail(field, `must not repeat an entry; entry ${index} (${describeValue(entry)}) appears twice`);
      seen.add(entry as string);
    });
    return [...(value as string[])];
  };
  const absent = (fields: readonly string[], usedBy: string) => {
    for (const field of fields) {
      if (root[field] !== undefined) fail(field, `belongs to ${usedBy} presets; a ${modelKind} preset must not have it`);
    }
  };

  if (modelKind === 'chat') {
    absent(BASE_LISTS, 'base');
    return {
      ...common,
      modelKind,
      positiveSystemPrompts: list('positiveSystemPrompts'),
      negativeSystemPrompts: list('negativeSystemPrompts'),
      questions: list('questions'),
    };
  }

  absent(CHAT_LISTS, 'chat');
  const positive = list('positive');
  const negative = list('negative');
  if (negative.length !== positive.length) {
    fail('negative', `must have as many entries as "positive" (${positive.length}), not ${negative.length}: entries at the same index form a pair`);
  }
  positive.forEach((entry, index) => {
    if (entry === negative[index]) fail('negative', `entry ${index} is the same text as "positive" entry ${index}; a pair must differ in the trait`);
  });
  return { ...common, modelKind, positive, negative };
}

/** The preset files, by file name without .json, in the order the UI lists them. */
const PRESET_FILES: Record<string, unknown> = {
  'misaligned-persona': misalignedPersona,
  'formal-casual': formalCasual,
  'pirate-plain': piratePlain,
  'concise-verbose': conciseVerbose,
  'happy-sad-stories': happySadStories,
  'kind-mean-stories': kindMeanStories,
};

/** Every built-in preset, validated. */
export const PRESETS: Preset[] = Object.entries(PRESET_FILES).map(([file, json]) => {
  const source = `src/engine/directions/presets/${file}.json`;
  const preset = parsePreset(json, source);
  if (preset.id !== file) throw new PresetError(`preset "${preset.id}" (${source}): field "id" must equal the file name, "${file}"`, 'id');
  return preset;
});

/** The built-in preset with this id; throws `PresetError` listing the known ids otherwise. */
export function presetById(id: string): Preset {
  const preset = PRESETS.find((candidate) => candidate.id === id);
  if (!preset) throw new PresetError(`unknown preset ${JSON.stringify(id)}; known presets: ${PRESETS.map((p) => p.id).join(', ')}`);
  return preset;
}

/** The prompts of a preset as the contrastive set `extractDirections` takes (copies; key order fixed, since the set is hashed). */
export function contrastiveSetOf(preset: Preset): ContrastiveSet {
  if (preset.modelKind === 'chat') {
    return {
      kind: 'persona',
      questions: [...preset.questions],
      positiveSystemPrompts: [...preset.positiveSystemPrompts],
      negativeSystemPrompts: [...preset.negativeSystemPrompts],
    };
  }
  return { kind: 'texts', positive: [...preset.positive], negative: [...preset.negative] };
}

/** A preset's prompts as diff prompts: both sides of a base preset (balanced, so neutral as a whole), or a
 *  chat preset's questions asked with no system prompt (the fine-tune answers them in answer mode). */
export function diffPromptsOf(preset: Preset): (string | ChatMessage[])[] {
  if (preset.modelKind === 'chat') return preset.questions.map((question) => [{ role: 'user', content: question }]);
  return [...preset.positive, ...preset.negative];
}
