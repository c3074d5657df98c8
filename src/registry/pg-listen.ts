// LISTEN/NOTIFY for the PostgreSQL engine: every change sends a NOTIFY on CHANNEL at its
// commit; a following process holds a connection of its own that LISTENs for it. A broken
// connection is dropped; `ensure` (called on every REFRESH_MS tick) makes a new one.
import pg from 'pg';

export const CHANNEL = 'kzymy_registry';

export class Listener {
  private client: pg.Client | null = null;
  private connecting: Promise<void> | null = null;
  private closed = false;

  /** `onNotify` runs at each notification, and once a new connection listens (for changes made while none did). */
  constructor(
    private readonly url: string,
    private readonly onNotify: () => void,
  ) {}

  /** Starts a connection that listens, unless one does or is being made. */
  ensure(): void {
    if (this.client || this.connecting || this.closed) return;
    this.connecting = this.listen().finally(() => (this.connecting = null));
  }

  private async listen(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: 10_000, application_name: 'kzymy-listen' });
    const drop = () => {
      if (this.client === client) this.client = null;
      void client.end().catch(() => undefined);
    };
    client.on('error', drop);
    client.on('end', drop);
    client.on('notification', () => this.onNotify());
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
    } catch {
      drop();
      return;
    }
    if (this.closed) return drop();
    this.client = client;
    // Changes made while there was no listener.
    this.onNotify();
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.connecting;
    await this.client?.end().catch(() => undefined);
    this.client = null;
  }
}
