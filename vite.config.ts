import { svelte } from '@sveltejs/vite-plugin-svelte';
import { defineConfig } from 'vite';
import { ISOLATION_HEADERS } from './cli/serve-files.ts';
import { localModelsPlugin } from './scripts/local-models.ts';

export default defineConfig({
  // Relative asset paths: the built folder runs from any static host and sub-folder.
  base: './',
  plugins: [svelte(), localModelsPlugin(process.env.TILLER_MODELS_DIR ?? 'models')],
  worker: { format: 'es' },
  // Multi-threaded WASM needs SharedArrayBuffer, which needs cross-origin isolation.
  server: { headers: ISOLATION_HEADERS },
  preview: { headers: ISOLATION_HEADERS },
  optimizeDeps: { exclude: ['onnxruntime-web'] },
});
