/**
 * The end of an iteration, for the fabric's iterator objects to return (one frozen object, not a
 * fresh one per stream).
 */
export const DONE: IteratorReturnResult<undefined> = Object.freeze({
  done: true,
  value: undefined,
});
