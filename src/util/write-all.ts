/**
 * What is left of `buffers` after a vectored write sent `written` bytes: the piece the writers of the
 * content store and of layer unpacking loop on (a short write only happens on ENOSPC; looping surfaces it).
 */
export function afterWrite(buffers: readonly Buffer[], written: number): Buffer[] {
  let skip = written;
  const rest: Buffer[] = [];
  for (const b of buffers) {
    if (skip >= b.length) skip -= b.length;
    else {
      rest.push(skip > 0 ? b.subarray(skip) : b);
      skip = 0;
    }
  }
  return rest;
}
