/** The app's own model folders (models/index.json) and where each loads from; shared by the Model panel and the fine-tune comparison. */
import type { ModelLocation } from '../engine/api.ts';

export interface LocalModel {
  name: string;
  onnx: string[];
  /** Whether it has a chat template. */
  chat?: boolean;
  /** The default model that ships with the app (public/models/). */
  embedded?: boolean;
}

/** The folders the server offers (none where it lists nothing, e.g. a static host without models/). */
export async function fetchLocalModels(): Promise<LocalModel[]> {
  // Relative to the page, so the built app also works from a sub-folder (GitHub Pages, any static host).
  const listing = await fetch('models/index.json')
    .then((r) => (r.ok ? r.json() : { models: [] }))
    .catch(() => ({ models: [] }));
  return (listing as { models: LocalModel[] }).models;
}

export function localModelLocation(name: string, models: LocalModel[]): ModelLocation {
  // A plain copy: state proxies cannot be cloned into the worker.
  const onnxFiles = models.find((m) => m.name === name)?.onnx.slice();
  return { kind: 'url', url: new URL(`models/${name}`, location.href).href, onnxFiles };
}

/** Local folders named as fine-tunes of `modelId` (stories260K-hf → stories260K-sad-dogs-hf): its name, less a
 *  trailing -hf/-onnx, then a dash. */
export function fineTunesOf(modelId: string, models: LocalModel[]): LocalModel[] {
  const stem = modelId.split('/').pop()!.replace(/-(hf|onnx)$/i, '');
  return models.filter((m) => m.name !== modelId && m.name.toLowerCase().startsWith(`${stem.toLowerCase()}-`));
}
