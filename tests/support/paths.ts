import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The read-only test models shared by every checkout (see ../shared/models/README.md). */
export const sharedModelsDir = process.env.TILLER_SHARED_MODELS ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../shared/models');

export function sharedModel(name: string): string {
  return path.join(sharedModelsDir, name);
}

export const SHARED = {
  stories: { folder: 'stories260K-hf', file: 'onnx/model.onnx' },
  builder: { folder: 'tiny-random-llama-builder-fp16', file: 'onnx/model_fp16.onnx' },
  gqa: { folder: 'tiny-random-qwen-gqa-decoder', file: 'decoder.onnx' },
} as const;

export function sharedGraphPath(name: keyof typeof SHARED): string {
  return path.join(sharedModel(SHARED[name].folder), SHARED[name].file);
}

/** Where the browser tests build the app for `port`: outside the checkout, so writing it never reloads an
 *  open dev page (playwright.config.ts builds there; `tiller serve` tests serve it). */
export function testBuildDir(port: number): string {
  return path.join(os.tmpdir(), `tiller-test-dist-${port}`);
}
