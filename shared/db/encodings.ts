// What the bundles give mysql2 in place of iconv-lite (build.mjs resolves `iconv-lite` here): the
// few non-Node encodings the driver meets with our utf8mb4 connections, without iconv-lite's
// ~480 KiB of code tables in every bundle.
//
// mysql2 asks iconv-lite only for encodings Buffer does not know (lib/parsers/string.js). With
// the connection charset utf8mb4 (mysql2's default, which createPool keeps) every text value comes
// back as utf8, a Buffer encoding. What remains is the server's own charset, used for the server
// version in the handshake ('cesu8') and the OK packet's info text ('cesu8' for utf8mb3, 'cp1252'
// for MySQL's latin1): both handled here. CESU-8 differs from UTF-8 only above U+FFFF, which
// utf8mb3 cannot hold. Anything else (a MYSQL_URL asking for another charset) fails loudly,
// naming the encoding, instead of decoding wrongly.

interface Decoder { write(buf: Buffer): string; end(): string | undefined }
interface Encoder { write(str: string): Buffer; end(): Buffer | undefined }

// Windows-1252's 0x80..0x9F (MySQL's latin1); the undefined five decode to U+FFFD as iconv-lite does.
const CP1252_HIGH = '€\uFFFD‚ƒ„…†‡ˆ‰Š‹Œ\uFFFDŽ\uFFFD\uFFFD‘’“”•–—˜™š›œ\uFFFDžŸ';

const normalize = (encoding: string) => encoding.toLowerCase().replace(/[^0-9a-z]/g, '');

function unsupported(encoding: string): Error {
  return new Error(`encoding '${encoding}' is not in this bundle: sluice talks utf8mb4 to MySQL (build.mjs replaces iconv-lite with shared/db/encodings.ts)`);
}

function decodeCp1252(buf: Buffer): string {
  let out = '';
  for (let i = 0; i < buf.length; i++) {
    const b = buf[i]!;
    out += b >= 0x80 && b <= 0x9f ? CP1252_HIGH[b - 0x80] : String.fromCharCode(b);
  }
  return out;
}

export function encodingExists(encoding: string): boolean {
  return Buffer.isEncoding(encoding) || ['cesu8', 'cp1252', 'windows1252'].includes(normalize(encoding));
}

export function getDecoder(encoding: string): Decoder {
  switch (normalize(encoding)) {
    case 'cesu8': {
      // A string decoder keeps a character split across two writes whole.
      const decoder = new TextDecoder('utf-8');
      return { write: (buf) => decoder.decode(buf, { stream: true }), end: () => decoder.decode() || undefined };
    }
    case 'cp1252':
    case 'windows1252':
      return { write: decodeCp1252, end: () => undefined };
    default:
      throw unsupported(encoding);
  }
}

export function getEncoder(encoding: string): Encoder {
  // Only mysql2's server side (its handshake writer) encodes to cesu8; the same bytes as UTF-8 below U+10000.
  if (normalize(encoding) === 'cesu8') return { write: (str) => Buffer.from(str, 'utf8'), end: () => undefined };
  throw unsupported(encoding);
}

export function decode(buf: Buffer, encoding: string): string {
  const decoder = getDecoder(encoding);
  return decoder.write(buf) + (decoder.end() ?? '');
}

export function encode(str: string, encoding: string): Buffer {
  return getEncoder(encoding).write(str);
}
