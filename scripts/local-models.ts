/**
 * Serves local model folders at /models/ in dev and preview: `/models/index.json` lists the folders
 * that hold a config.json with their onnx/ files (so the engine can pick a variant), and `/models/<name>/<path>` serves their files, so the app works offline.
 */
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import type { Plugin } from 'vite';

export function localModelsPlugin(modelsDir: string): Plugin {
  const root = path.resolve(modelsDir);
  const handle = async (req: IncomingMessage, res: ServerResponse, next: () => void) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (!url.pathname.startsWith('/models/')) return next();
    const relative = decodeURIComponent(url.pathname.slice('/models/'.length));
    res.setHeader('Cross-Origin-Resource-Policy', 'same-origin');
    if (relative === 'index.json') {
      const names = await readdir(root).catch(() => [] as string[]);
      const models = [];
      for (const name of names.sort()) {
        if (!(await stat(path.join(root, name, 'config.json')).catch(() => undefined))) continue;
        const onnx = await readdir(path.join(root, name, 'onnx')).catch(() => [] as string[]);
        models.push({ name, onnx: onnx.sort() });
      }
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ models }));
      return;
    }
    const file = path.resolve(root, relative);
    const info = file.startsWith(root + path.sep) ? await stat(file).catch(() => undefined) : undefined;
    if (!info?.isFile()) {
      res.statusCode = 404;
      res.end(`no such model file: ${relative}`);
      return;
    }
    res.setHeader('Content-Length', String(info.size));
    res.setHeader('Content-Type', file.endsWith('.json') ? 'application/json' : 'application/octet-stream');
    createReadStream(file).pipe(res);
  };
  return {
    name: 'tiller-local-models',
    configureServer: (server) => void server.middlewares.use((req, res, next) => void handle(req, res, next)),
    configurePreviewServer: (server) => void server.middlewares.use((req, res, next) => void handle(req, res, next)),
  };
}
