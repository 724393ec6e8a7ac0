import { describe, it, expect } from 'vitest';
import { formatDuration, parseDuration } from '../../../src/config/duration.js';

describe('parseDuration', () => {
  it.each([
    ['0', 0],
    ['0s', 0],
    ['250ms', 250],
    ['30s', 30_000],
    ['5m', 300_000],
    ['4h', 14_400_000],
    ['1m30s', 90_000],
    ['1h2m3s4ms', 3_723_004],
    ['1.5h', 5_400_000],
    ['0.5s', 500],
    ['1.25s', 1250],
    ['90s', 90_000],
    ['2h45m', 9_900_000],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each([
    ['', 'empty'],
    ['30', 'no unit'],
    ['5x', 'unknown unit'],
    ['5d', 'days are not a Go unit'],
    ['10us', 'sub-millisecond unit'],
    ['1.5ms', 'sub-millisecond remainder'],
    ['-5s', 'sign'],
    ['+5s', 'sign'],
    ['5 s', 'space'],
    [' 5s', 'leading space'],
    ['s', 'no number'],
    ['.5s', 'no leading digit'],
    ['5.s', 'no fraction digits'],
    ['1m30', 'trailing number'],
    ['5mss', 'trailing unit'],
    ['1e3s', 'exponent'],
    ['9999999999999999h', 'overflow'],
  ])('rejects %j (%s)', (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0s'],
    [1, '1ms'],
    [250, '250ms'],
    [1000, '1s'],
    [60_000, '1m'],
    [90_000, '1m30s'],
    [14_400_000, '4h'],
    [3_723_004, '1h2m3s4ms'],
    [2 ** 31 - 1, '596h31m23s647ms'],
  ])('%d ms is %s', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
    expect(parseDuration(text)).toBe(ms);
  });

  it.each([-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])('rejects %d', (ms) => {
    expect(() => formatDuration(ms)).toThrow(RangeError);
  });
});
