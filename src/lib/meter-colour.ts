/** The persona meter's colours, shared by every view that shows it: red toward the trait (+), blue away (−). */
import { interpolateRdBu, scaleDiverging } from 'd3';

// Clamped at ±2: beyond twice the examples' own distance, more colour says nothing new.
export const meterColour = scaleDiverging(interpolateRdBu).domain([2, 0, -2]).clamp(true);

/** Text colour readable on `meterColour(value)`. */
export const meterInk = (value: number) => (Math.abs(value) > 1.4 ? '#fff' : '#222');
