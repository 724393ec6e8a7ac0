/** Small TOML writing helpers shared by messages (key paths) and the renderer. */

/** A TOML basic string. JSON's escapes are not all valid TOML (`\/` is), so escape by hand. */
export function tomlString(value: string): string {
  let out = '"';
  for (const char of value) {
    const code = char.codePointAt(0) ?? 0;
    if (char === '"') out += '\\"';
    else if (char === '\\') out += '\\\\';
    else if (char === '\n') out += '\\n';
    else if (char === '\t') out += '\\t';
    else if (char === '\r') out += '\\r';
    else if (code < 0x20 || code === 0x7f) out += `\\u${code.toString(16).padStart(4, '0')}`;
    else out += char;
  }
  return `${out}"`;
}

/** One key segment: bare when TOML allows it, quoted otherwise (`runc`, `"docker.io"`). */
export function tomlKey(segment: string): string {
  return /^[A-Za-z0-9_-]+$/.test(segment) ? segment : tomlString(segment);
}

/** A dotted key as written in TOML: `registries."docker.io".mirrors`. */
export function formatKey(segments: readonly string[]): string {
  return segments.map(tomlKey).join('.');
}
