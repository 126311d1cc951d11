/**
 * The longest delay a Node.js timer holds: 2^31 - 1 ms, about 24.8 days. Node does not refuse a
 * longer one; it warns (TimeoutOverflowWarning) and fires it after 1 ms, so a generous deadline
 * would end its call at once.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/** A deadline timer's delay: one longer than a timer holds waits that long instead. */
export function timerDelay(ms: number): number {
  return Math.min(ms, MAX_TIMER_MS);
}
