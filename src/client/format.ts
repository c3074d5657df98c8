// Sizes for people: "512 bytes", "9.8 KiB", "100 MiB" (binary units, as df -h and du -h).
const UNITS = ['KiB', 'MiB', 'GiB', 'TiB'];

export function humanBytes(n: number): string {
  if (!Number.isFinite(n) || n < 1024) return `${Math.max(0, Math.round(n))} byte${Math.round(n) === 1 ? '' : 's'}`;
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1).replace(/\.0$/, '') : Math.round(v)} ${UNITS[i]}`;
}
