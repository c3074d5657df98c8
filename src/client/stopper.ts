// How SIGINT and SIGTERM end a fetch: after the message being delivered, or out of a sleep.
import type { ClientError } from './errors.js';

/** Lets SIGINT/SIGTERM end a run cleanly: after the current message, or out of a sleep at once. */
export class Stopper {
  stopped = false;
  /** Why the run must end (the profile lock was lost), thrown once it has stopped. */
  reason: ClientError | null = null;
  private wake: (() => void) | null = null;
  private readonly onSignal = (): void => {
    if (this.stopped) process.exit(130); // a second signal: stop now
    this.stopped = true;
    this.wake?.();
  };

  install(): void {
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  uninstall(): void {
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }

  /** Ends the run after the current message, with `reason` as its outcome. */
  abort(reason: ClientError): void {
    this.reason ??= reason;
    this.stopped = true;
    this.wake?.();
  }

  sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}
