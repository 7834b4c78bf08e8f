/** Serves local model folders at /models/ in Vite's dev and preview servers (see cli/serve-files.ts). */
import type { Plugin } from 'vite';
import { modelsHandler } from '../cli/serve-files.ts';

export function localModelsPlugin(modelsDir: string): Plugin {
  const handle = modelsHandler(modelsDir);
  return {
    name: 'tiller-local-models',
    configureServer: (server) => void server.middlewares.use((req, res, next) => void handle(req, res, next)),
    configurePreviewServer: (server) => void server.middlewares.use((req, res, next) => void handle(req, res, next)),
  };
}
