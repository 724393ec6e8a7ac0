/**
 * Durations in the config file are strings in Go's `time.ParseDuration` style ("30s", "5m", "1m30s",
 * "1.5h", "250ms"), because that is what containerd and kubelet configs use and what operators type.
 * The Config holds them as whole milliseconds, which is what Node's timers take.
 */

/** Milliseconds per unit. */
const unitMs = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 } as const;

/** One `<number><unit>` term; `ms` is listed before `m` so "250ms" is not read as 250 minutes + "s". */
const term = /(\d{1,15})(?:\.(\d{1,6}))?(ms|h|m|s)/y;

/**
 * Parses a duration to whole milliseconds; `undefined` for anything else: no sign, no spaces, no
 * units other than h, m, s and ms (Go's "us"/"ns" would be sub-millisecond), no sub-millisecond
 * remainder ("1.5ms"). A bare "0" is accepted as in Go.
 */
export function parseDuration(text: string): number | undefined {
  if (text === '0') return 0;
  if (text === '') return undefined;
  let total = 0;
  let pos = 0;
  while (pos < text.length) {
    term.lastIndex = pos;
    const match = term.exec(text);
    if (match === null) return undefined;
    pos = term.lastIndex;
    const [, whole = '', fraction = '', unit = ''] = match;
    const size = unitMs[unit as keyof typeof unitMs];
    // Integer arithmetic only: fraction * size stays far below 2^53, and dividing an exact multiple
    // of 10^k by 10^k is exact in floating point, so a non-integer result means a sub-ms remainder.
    const fractionMs = fraction === '' ? 0 : (Number(fraction) * size) / 10 ** fraction.length;
    if (!Number.isInteger(fractionMs)) return undefined;
    total += Number(whole) * size + fractionMs;
  }
  return Number.isSafeInteger(total) ? total : undefined;
}

/**
 * The canonical string for a number of milliseconds, largest units first and zero units left out:
 * 14400000 → "4h", 90000 → "1m30s", 250 → "250ms", 0 → "0s". `parseDuration` inverts it.
 */
export function formatDuration(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms < 0) {
    throw new RangeError(`format duration: ${ms} is not a whole non-negative number of milliseconds`);
  }
  if (ms === 0) return '0s';
  let rest = ms;
  let out = '';
  for (const [unit, size] of Object.entries(unitMs)) {
    const count = Math.floor(rest / size);
    if (count > 0) {
      out += `${count}${unit}`;
      rest -= count * size;
    }
  }
  return out;
}
