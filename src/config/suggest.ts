/**
 * "Did you mean" for unknown keys. Names are compared case-insensitively with `_` and `-` dropped, so
 * camelCase habits (`binaryPath`) and dash/underscore mix-ups (`max-recv-message-size`) match exactly;
 * transpositions count as one edit, so `grcp` finds `grpc`.
 */

function normalise(name: string): string {
  return name.toLowerCase().replace(/[-_]/g, '');
}

/** Optimal-string-alignment distance: Levenshtein plus adjacent transpositions. */
export function editDistance(a: string, b: string): number {
  // rows[i][j] = distance between a[0..i) and b[0..j); three rolling rows suffice.
  let before: number[] = [];
  let previous: number[] = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current: number[] = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, (before[j - 2] ?? 0) + 1);
      }
      current.push(best);
    }
    before = previous;
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/**
 * The candidate closest to `name`, if it is close: at most a third of the candidate's length in edits
 * (at least one), which catches typos without proposing `root` for `foo`. Ties go to the earlier
 * candidate, i.e. schema order.
 */
export function closest(name: string, candidates: Iterable<string>): string | undefined {
  const wanted = normalise(name);
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const normalised = normalise(candidate);
    const distance = editDistance(wanted, normalised);
    if (distance <= Math.max(1, Math.floor(normalised.length / 3)) && distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}
