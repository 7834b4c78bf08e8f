// Plain vector arithmetic shared by the model, the directions and the views.

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i] * b[i];
  return sum;
}

export function vectorLength(v: ArrayLike<number>): number {
  return Math.sqrt(dot(v, v));
}
