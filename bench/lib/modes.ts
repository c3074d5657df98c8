// The smtp-source load shapes the intake benchmarks share: sessions at once, and one message
// a connection or many (-d).
export interface Mode {
  id: string;
  label: string;
  sessions: number;
  perConnection: boolean;
}

export const MODES: Mode[] = [
  { id: 's20', label: '20 sessions, one message a connection', sessions: 20, perConnection: false },
  { id: 's20d', label: '20 sessions, many a connection (`-d`)', sessions: 20, perConnection: true },
  { id: 's100', label: '100 sessions, one message a connection', sessions: 100, perConnection: false },
];
