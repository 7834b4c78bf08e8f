/**
 * HTTP for the app and its models, shared by Vite's dev/preview servers and `tiller serve`:
 * `/models/index.json` lists the model folders (those with a config.json), their onnx/ files (so the
 * engine can pick a variant) and whether they are chat models; `/models/<name>/<path>` serves their files; everything else is the built app.
 * Every answer carries cross-origin isolation headers, which multi-threaded WASM needs.
 */
import { createReadStream } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import path from 'node:path';

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

/** Handles `/models/…` from `modelsDir`; calls `next` for anything else. */
export function modelsHandler(modelsDir: string) {
  const root = path.resolve(modelsDir);
  return async (req: IncomingMessage, res: ServerResponse, next: () => void): Promise<void> => {
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
        // Whether it is a chat model, so the page can pre-select a fitting preset before loading it.
        const tokenizerConfig = await readFile(path.join(root, name, 'tokenizer_config.json'), 'utf8').catch(() => '');
        const chat = tokenizerConfig.includes('"chat_template"') || Boolean(await stat(path.join(root, name, 'chat_template.jinja')).catch(() => undefined));
        models.push({ name, onnx: onnx.sort(), chat });
      }
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ models }));
      return;
    }
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
