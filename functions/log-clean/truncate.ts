// Cutting text to fit a column without breaking a character: VARCHAR(n) of utf8mb4 counts
// characters (code points), TEXT counts UTF-8 bytes.

/** `s` cut to at most `max` code points, never between the two halves of a surrogate pair. */
export function truncateChars(s: string, max: number): string {
  if (s.length <= max) return s; // code points <= UTF-16 units
  let i = 0;
  for (let n = 0; n < max && i < s.length; n++) {
    const c = s.charCodeAt(i);
    const pair = c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00;
    i += pair ? 2 : 1;
  }
  return i >= s.length ? s : s.slice(0, i);
}

/** `s` cut to at most `max` UTF-8 bytes, at a character boundary (never inside a UTF-8 sequence). */
export function truncateBytes(s: string, max: number): string {
  // A UTF-16 unit is at most 3 UTF-8 bytes (a surrogate pair: 2 units, 4 bytes),
  // so short strings skip the byte count altogether.
  if (s.length * 3 <= max || Buffer.byteLength(s, 'utf8') <= max) return s;
  const buf = Buffer.from(s, 'utf8');
  let cut = max;
  // buf[cut] is the first byte left out: while it continues a sequence, that
  // sequence started inside the kept part, so leave it out whole.
  while (cut > 0 && (buf[cut]! & 0xc0) === 0x80) cut--;
  return buf.toString('utf8', 0, cut);
}
