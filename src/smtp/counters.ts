// SMTP replies counted by code, per minute, for the last hour (`kzymy-server status`).
// In memory only, and only codes: no address, no IP, nothing about a message.

const MINUTE = 60_000;
const SLOTS = 60;

export class ReplyCounter {
  /** Ring of per-minute counts; slot i holds minute m where m % SLOTS === i. */
  private readonly slots: { minute: number; counts: Map<string, number> }[] = [];

  /** Counts one reply: `250 2.0.0`, `550 5.1.1`, ... */
  record(code: number, enhanced?: string, now = Date.now()): void {
    const minute = Math.floor(now / MINUTE);
    const i = minute % SLOTS;
    let slot = this.slots[i];
    if (!slot || slot.minute !== minute) this.slots[i] = slot = { minute, counts: new Map() };
    const key = enhanced ? `${code} ${enhanced}` : String(code);
    slot.counts.set(key, (slot.counts.get(key) ?? 0) + 1);
  }

  /** The replies of the last 60 minutes (this one included), by code, sorted by code. */
  lastHour(now = Date.now()): Record<string, number> {
    const minute = Math.floor(now / MINUTE);
    const sum = new Map<string, number>();
    for (const slot of this.slots) {
      if (!slot || slot.minute <= minute - SLOTS || slot.minute > minute) continue;
      for (const [k, n] of slot.counts) sum.set(k, (sum.get(k) ?? 0) + n);
    }
    return Object.fromEntries([...sum].sort(([a], [b]) => a.localeCompare(b)));
  }
}
