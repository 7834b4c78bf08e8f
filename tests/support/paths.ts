import path from 'node:path';

/** The read-only test models shared by every checkout (see ../shared/models/README.md). */
export const sharedModelsDir = process.env.TILLER_SHARED_MODELS ?? path.resolve(__dirname, '../../../shared/models');

export function sharedModel(name: string): string {
  return path.join(sharedModelsDir, name);
}
