import jsQR from 'jsqr';

/** Reads a QR code from dark/light modules (true = dark), drawn 4 pixels a module inside a white margin. */
export function decodeModules(modules: boolean[][]): string | undefined {
  const scale = 4;
  const margin = 4;
  const size = (modules.length + 2 * margin) * scale;
  const pixels = new Uint8ClampedArray(size * size * 4).fill(255);
  modules.forEach((row, y) => row.forEach((dark, x) => {
    if (!dark) return;
    for (let dy = 0; dy < scale; dy++) {
      for (let dx = 0; dx < scale; dx++) {
        const at = (((y + margin) * scale + dy) * size + (x + margin) * scale + dx) * 4;
        pixels.fill(0, at, at + 3);
      }
    }
  }));
  return jsQR(pixels, size, size)?.data;
}

/** The modules of a QR code printed with ANSI background colours (black 40, white 47), one per cell. */
export function modulesFromAnsi(text: string): boolean[][] {
  return text.split('\n')
    .filter((line) => line.includes('\x1b[40m') || line.includes('\x1b[47m'))
    .map((line) => [...line.matchAll(/\x1b\[(40|47)m/g)].map((m) => m[1] === '40'));
}
