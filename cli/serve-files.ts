/**
 * HTTP for the app and its models, shared by Vite's dev/preview servers and `tiller serve`:
 * `/models/index.json` lists the model folders (those with a config.json), their onnx/ files (so the
 * engine can pick a variant) and whether they are chat models; `/models/<name>/<path>` serves their files; everything else is the built app.
 * The models folder comes first; the embedded default model (public/models/, tracked in the repository) is
 * always listed after it, so a fresh clone has one model with no network.
 * Every answer carries cross-origin isolation headers, which multi-threaded WASM needs.
 */
import { createReadStream } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
} as const;

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
  '.mjs': 'text/javascript',
  '.css': 'text/css',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

/** The models that ship with the repository (and with the built app, as public/ is copied into it). */
export const EMBEDDED_MODELS_DIR = fileURLToPath(new URL('../public/models', import.meta.url));
/** The default model of the app and the CLI, a folder of EMBEDDED_MODELS_DIR. */
export const EMBEDDED_MODEL = 'stories260K';

/** Sends one file below `root`, or answers 404; never leaves `root`. */
async function sendFile(res: ServerResponse, root: string, relative: string): Promise<boolean> {
  const file = path.resolve(root, relative);
  const info = file.startsWith(root + path.sep) ? await stat(file).catch(() => undefined) : undefined;
  if (!info?.isFile()) return false;
  res.setHeader('Content-Length', String(info.size));
  res.setHeader('Content-Type', CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream');
  createReadStream(file).pipe(res);
  return true;
}

/** Handles `/models/…` from `modelsDir`, then the embedded models; calls `next` for anything else. */
export function modelsHandler(modelsDir: string) {
  const roots = [...new Set([path.resolve(modelsDir), EMBEDDED_MODELS_DIR])];
  /** The folder that holds model `name` (the first root where it has a config.json). */
  const rootOf = async (name: string) => {
    for (const root of roots) if (await stat(path.join(root, name, 'config.json')).catch(() => undefined)) return root;
    return undefined;
  };
  return async (req: IncomingMessage, res: ServerResponse, next: () => void): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (!url.pathname.startsWith('/models/')) return next();
    const relative = decodeURIComponent(url.pathname.slice('/models/'.length));
    res.setHeader('Cross-Origin-Resource-Policy', 'same-origin');
    if (relative === 'index.json') {
      const models: { name: string; onnx: string[]; chat: boolean; embedded?: true }[] = [];
      for (const root of roots) {
        for (const name of (await readdir(root).catch(() => [] as string[])).sort()) {
          if (models.some((m) => m.name === name) || (await rootOf(name)) !== root) continue;
          const onnx = await readdir(path.join(root, name, 'onnx')).catch(() => [] as string[]);
          // Whether it is a chat model, so the page can pre-select a fitting preset before loading it.
          const tokenizerConfig = await readFile(path.join(root, name, 'tokenizer_config.json'), 'utf8').catch(() => '');
          const chat = tokenizerConfig.includes('"chat_template"') || Boolean(await stat(path.join(root, name, 'chat_template.jinja')).catch(() => undefined));
          models.push({ name, onnx: onnx.sort(), chat, ...(root === EMBEDDED_MODELS_DIR ? { embedded: true } : {}) });
        }
      }
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ models }));
      return;
    }
    const root = (await rootOf(relative.split('/')[0])) ?? roots[0];
    if (!(await sendFile(res, root, relative))) {
      res.statusCode = 404;
      res.end(`no such model file: ${relative}`);
    }
  };
}

/** The built app from `appDir` and models from `modelsDir`, on one port. */
export function startAppServer(appDir: string, modelsDir: string, port: number, host: string): Promise<Server> {
  const root = path.resolve(appDir);
  const models = modelsHandler(modelsDir);
  const server = createServer((req, res) => {
    for (const [name, value] of Object.entries(ISOLATION_HEADERS)) res.setHeader(name, value);
    void models(req, res, async () => {
      const pathname = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname);
      const relative = pathname === '/' ? 'index.html' : pathname.slice(1);
      if (await sendFile(res, root, relative)) return;
      res.statusCode = 404;
      res.setHeader('Content-Type', 'text/plain');
      res.end(`not found: ${pathname}`);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
