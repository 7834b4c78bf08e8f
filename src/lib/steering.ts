/**
 * From the playground's settings to what the engine runs: the prompt fields, and one steering row per
 * steered column (addition of one or two directions, a sweep, or ablation over a range of layers).
 * Generations, the next-token chart and the meter all read the same columns.
 */
import type { GenerateRequest } from '../engine/generation/generate.ts';
import type { ModelInfo, SteeringRow } from '../engine/model/steerable-model.ts';
import { directionMultiplier, scaledDirection } from '../engine/directions/strength.ts';
import type { VectorFile } from '../engine/directions/vector-file.ts';
import type { Settings } from './settings.ts';

export interface SteeredColumn {
  key: string;
  label: string;
  row: SteeringRow;
}

/** Chat messages where the model has a chat template, the raw prompt otherwise. */
export function promptFields(
  info: ModelInfo,
  prompt: string,
  systemPrompt: string,
  chatContext?: Record<string, unknown>,
): Pick<GenerateRequest, 'prompt' | 'messages' | 'chatContext'> {
  if (!info.hasChatTemplate) return { prompt };
  const system = systemPrompt.trim() ? [{ role: 'system' as const, content: systemPrompt }] : [];
  return { messages: [...system, { role: 'user' as const, content: prompt }], chatContext };
}

const signed = (s: number) => `${s >= 0 ? '+' : ''}${Number(s.toFixed(2))}`;

export type SteeringChoice = Pick<Settings, 'layer' | 'strength' | 'sweep' | 'operation' | 'ablateFrom' | 'ablateTo' | 'strengthB'>;

/** The steered columns beside the baseline; none until there is a direction at the chosen layer. */
export function steeredColumns(settings: SteeringChoice, file: VectorFile | undefined, second?: VectorFile): SteeredColumn[] {
  const direction = file?.directions.find((d) => d.layer === settings.layer);
  if (!file || !direction) return [];
  if (settings.operation === 'ablate') {
    const from = settings.ablateFrom ?? direction.layer;
    const to = Math.max(from, settings.ablateTo ?? from);
    // Each layer ablates its own direction where the file has one, the chosen layer's otherwise.
    const row: SteeringRow = [];
    for (let layer = from; layer <= to; layer++) {
      row.push({ layer, vector: (file.directions.find((d) => d.layer === layer) ?? direction).vector, operation: 'ablate' });
    }
    return [{ key: 'steered', label: `Ablated · layer${from === to ? ` ${from}` : `s ${from}–${to}`}`, row }];
  }
  const add = (relative: number) => (relative === 0 ? [] : [{ layer: direction.layer, vector: scaledDirection(direction.vector, directionMultiplier(relative, direction)) }]);
  const secondDirection = second?.directions.find((d) => d.layer === (second.recommendedLayer ?? second.directions[0].layer));
  if (secondDirection) {
    const b = settings.strengthB;
    const row = [...add(settings.strength), ...(b === 0 ? [] : [{ layer: secondDirection.layer, vector: scaledDirection(secondDirection.vector, directionMultiplier(b, secondDirection)) }])];
    return [{ key: 'steered', label: `Steered ${signed(settings.strength)} · ${second?.preset ?? 'B'} ${signed(b)}`, row }];
  }
  const strengths = [settings.strength, ...(settings.sweep ? [-settings.strength, settings.strength / 2] : [])];
  return strengths.map((s, i) => ({
    key: i === 0 ? 'steered' : `sweep-${i}`,
    label: `${i === 0 ? 'Steered' : 'Sweep'} ${signed(s)} · layer ${direction.layer}`,
    row: add(s),
  }));
}

/** The strength the lesson and presenter mode demonstrate with: the edge of the coherent range the direction
 *  was measured to keep (perplexity within 1.5×), or 0.3 for files without one (0.05 where even that garbles). */
export function demoStrength(file: VectorFile | undefined): number {
  const measured = file?.directions.find((d) => d.coherentStrength !== undefined)?.coherentStrength;
  return measured === undefined ? 0.3 : Math.max(0.05, measured);
}
