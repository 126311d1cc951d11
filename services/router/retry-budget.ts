/**
 * Caps retries at a share of traffic (Finagle's retry budget): every request deposits `ratio`
 * tokens, every retry withdraws one, and `minPerSecond` retries are always allowed so a quiet
 * router can still retry. Deposits expire after `windowMs`, so an outage that turns every request
 * into retries cannot multiply the load on upstreams beyond (1 + ratio).
 */
export class RetryBudget {
  private deposits: Array<{ at: number; tokens: number }> = [];
  private balance = 0;
  private reserveAt: number;
  private reserve: number;

  constructor(
    private readonly ratio: number,
    private readonly minPerSecond: number,
    private readonly windowMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {
    this.reserveAt = now();
    this.reserve = minPerSecond;
  }

  /** A request arrived: it earns `ratio` retries. */
  onRequest(): void {
    if (this.ratio <= 0) return;
    this.expire();
    this.deposits.push({ at: this.now(), tokens: this.ratio });
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

  private withdraw(tokens: number): void {
    this.balance -= tokens;
    let left = tokens;
    while (left > 0 && this.deposits.length > 0) {
      const first = this.deposits[0] as { at: number; tokens: number };
      const take = Math.min(first.tokens, left);
      first.tokens -= take;
      left -= take;
      if (first.tokens <= 1e-9) this.deposits.shift();
    }
  }

  private expire(): void {
    const cutoff = this.now() - this.windowMs;
    while (this.deposits.length > 0 && (this.deposits[0] as { at: number }).at < cutoff) {
      this.balance -= (this.deposits.shift() as { tokens: number }).tokens;
    }
    if (this.balance < 1e-9) this.balance = 0;
  }
}
