/**
 * Steering strength in user units, converted in this one place: a relative strength of 1 adds a vector as
 * long as a typical token residual at that layer; the absolute multiplier scales the raw direction.
 */

export interface DirectionScale {
  /** ‖direction‖ */
  norm: number;
  /** Mean length of one token's residual at the direction's layer. */
  meanResidualNorm: number;
}

export function multiplierFor(relativeStrength: number, scale: DirectionScale): number {
  if (!(scale.norm > 0)) throw new Error('the direction has zero length: the two prompt sets gave the same mean residual');
  return (relativeStrength * scale.meanResidualNorm) / scale.norm;
}

export function relativeStrengthFor(multiplier: number, scale: DirectionScale): number {
  return (multiplier * scale.norm) / scale.meanResidualNorm;
}

/** The multiplier for a direction that may carry no residual scale (llama.cpp control vectors): then the
 *  strength is the multiplier itself. */
export function directionMultiplier(relativeStrength: number, direction: { norm: number; meanResidualNorm?: number }): number {
  return direction.meanResidualNorm === undefined
    ? relativeStrength
    : multiplierFor(relativeStrength, { norm: direction.norm, meanResidualNorm: direction.meanResidualNorm });
}

/** The vector actually added to the residual. */
export function scaledDirection(direction: ArrayLike<number>, multiplier: number): Float32Array {
  return Float32Array.from(direction, (v) => v * multiplier);
}
