// The lines `kzymy-server status` prints: a mark, the part of the server it is about, and
// one sentence.
export type Mark = 'ok' | 'problem' | 'unknown';
export interface StatusLine {
  mark: Mark;
  part: string;
  text: string;
}

/** An empty list of lines and the function that adds one to it. */
export function statusLines(): { lines: StatusLine[]; add: (mark: Mark, part: string, text: string) => void } {
  const lines: StatusLine[] = [];
  return { lines, add: (mark, part, text) => void lines.push({ mark, part, text }) };
}

/** A line as printed: mark and part in columns, then the sentence. */
export function formatLine(l: StatusLine): string {
  return `${l.mark.padEnd(8)}${l.part.padEnd(11)}${l.text}`;
}
