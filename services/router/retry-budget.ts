/** How many slices the window is kept in: deposits expire a slice at a time. */
const SLICES = 10;

/**
 * Caps retries at a share of traffic (Finagle's retry budget): every request deposits `ratio`
 * tokens, every retry withdraws one, and `minPerSecond` retries are always allowed so a quiet
 * router can still retry. Deposits expire after `windowMs`, so an outage that turns every request
 * into retries cannot multiply the load on upstreams beyond (1 + ratio).
 *
 * Deposits are summed per tenth of the window (as Finagle's WindowedAdder does), not kept one per
 * request: at thousands of requests a second a list of deposits held tens of thousands of entries,
 * and shifting the expired ones off it cost the router 3 % of its CPU. A deposit lives between
 * nine and ten tenths of the window.
 */
export class RetryBudget {
  /** Tokens deposited, less those withdrawn, per slice: a ring indexed by slice number. */
  private readonly slices = new Float64Array(SLICES);
  private readonly sliceMs: number;
  /** The slice number (time ÷ sliceMs) the newest slot holds. */
  private current: number;
  private balance = 0;
  private reserveAt: number;
  private reserve: number;

  constructor(
    private readonly ratio: number,
    private readonly minPerSecond: number,
    windowMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {
    this.sliceMs = windowMs / SLICES;
    this.current = Math.floor(now() / this.sliceMs);
    this.reserveAt = now();
    this.reserve = minPerSecond;
  }

  /** A request arrived: it earns `ratio` retries. */
  onRequest(): void {
    if (this.ratio <= 0) return;
    this.expire();
    const at = slot(this.current);
    this.slices[at] = (this.slices[at] as number) + this.ratio;
    this.balance += this.ratio;
  }

  /** Whether one more retry may go out now; takes the token if so. */
  tryRetry(): boolean {
    this.expire();
    const t = this.now();
    // The floor refills continuously at minPerSecond, up to one second's worth.
    this.reserve = Math.min(
      this.minPerSecond,
      this.reserve + ((t - this.reserveAt) / 1000) * this.minPerSecond,
    );
    this.reserveAt = t;
    if (this.reserve >= 1) {
      this.reserve -= 1;
      return true;
    }
    if (this.balance >= 1) {
      this.withdraw(1);
      return true;
    }
    return false;
  }

  /** Takes `tokens` from the oldest slices first, so what is left expires last. */
  private withdraw(tokens: number): void {
    this.balance -= tokens;
    let left = tokens;
    for (let age = SLICES - 1; age >= 0 && left > 0; age--) {
      const at = slot(this.current - age);
      const take = Math.min(this.slices[at] as number, left);
      this.slices[at] = (this.slices[at] as number) - take;
      left -= take;
    }
  }

  /** Moves the ring to the present: the slots of slices that have passed are emptied for reuse. */
  private expire(): void {
    const slice = Math.floor(this.now() / this.sliceMs);
    if (slice <= this.current) return; // the same slice, or the clock stepped back
    const passed = Math.min(slice - this.current, SLICES);
    for (let i = 1; i <= passed; i++) {
      const at = slot(this.current + i);
      this.balance -= this.slices[at] as number;
      this.slices[at] = 0;
    }
    this.current = slice;
    if (this.balance < 1e-9) this.balance = 0;
  }
}

function slot(slice: number): number {
  return ((slice % SLICES) + SLICES) % SLICES;
}
