/** Reading, parsing, validating and merging config files. */
import { readFile } from 'node:fs/promises';
import { parse, TomlError, type TomlTable } from 'smol-toml';
import { ConfigError, type ConfigProblem } from './errors.js';
import { configSchema, crossChecks, type Config } from './keys.js';
import { decodeTable, defaultsOf } from './schema.js';

export const DEFAULT_CONFIG_PATH = '/etc/skiff/config.toml';

/** What `loadConfig` reports as the source when no file was read. */
export const BUILT_IN_DEFAULTS = 'built-in defaults';

/** A fresh deep copy of the defaults; callers may mutate it. */
export function defaultConfig(): Config {
  return defaultsOf(configSchema) as unknown as Config;
}

/**
 * Parses and validates config text, merged over the defaults: keys left out keep their defaults,
 * map entries add to (or merge over) the built-in ones. Throws a ConfigError listing every problem.
 */
export function parseConfig(text: string, file?: string): Config {
  const raw = parseToml(text, file);
  const tree = defaultsOf(configSchema);
  const problems: ConfigProblem[] = [];
  decodeTable(configSchema, raw, tree, problems);
  const config = tree as unknown as Config;
  const hasProblem = (key: string): boolean =>
    problems.some(
      (p) => p.keyPath === key || p.keyPath.startsWith(`${key}.`) || p.keyPath.startsWith(`${key}[`),
    );
  for (const { reads, check } of crossChecks) {
    if (!reads.some(hasProblem)) problems.push(...check(config));
  }
  if (problems.length > 0) throw ConfigError.fromProblems(problems, file);
  return config;
}

function parseToml(text: string, file: string | undefined): TomlTable {
  try {
    // Integers as bigint so that `port = 8080.0` is seen as the float it is; unsafe keys
    // (`__proto__`, `constructor`) rejected so map entry names cannot reach Object.prototype.
    return parse(text.replace(/^\uFEFF/, ''), { integersAsBigInt: true, unsafeKeyBehaviour: 'throw' });
  } catch (err) {
    if (!(err instanceof TomlError)) {
      const message = err instanceof Error ? err.message : String(err);
      throw new ConfigError(`${file ?? 'config'}: invalid TOML: ${message}`, { file, cause: err });
    }
    // smol-toml's message is "Invalid TOML document: <what>\n\n<code excerpt with a caret>".
    const [what = '', ...excerpt] = err.message.replace(/^Invalid TOML document: /, '').split('\n\n');
    const where =
      file === undefined ? `line ${err.line}, column ${err.column}` : `${file}:${err.line}:${err.column}`;
    const codeblock = excerpt.join('\n\n').trimEnd();
    throw new ConfigError(`${where}: invalid TOML: ${what}${codeblock === '' ? '' : `\n${codeblock}`}`, {
      file,
      cause: err,
    });
  }
}

/**
 * Loads `file`, or `defaultPath` when no file is given. A missing default file means the built-in
 * defaults (a node needs no config file); a missing file that was asked for is an error, since
 * silently running with defaults would hide a typo in --config. `defaultPath` is a parameter so that
 * tests never read the real /etc.
 */
export async function loadConfigFrom(
  file: string | undefined,
  defaultPath: string,
): Promise<{ config: Config; source: string }> {
  const target = file ?? defaultPath;
  let text: string;
  try {
    text = await readFile(target, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && file === undefined)
      return { config: defaultConfig(), source: BUILT_IN_DEFAULTS };
    const reason =
      code === 'ENOENT' ? 'config file not found' : `cannot read config file: ${(err as Error).message}`;
    throw new ConfigError(`${target}: ${reason}`, { file: target, cause: err });
  }
  return { config: parseConfig(text, target), source: target };
}

/** Loads `file`, or DEFAULT_CONFIG_PATH if it exists, or the built-in defaults. */
export async function loadConfig(file?: string): Promise<{ config: Config; source: string }> {
  return loadConfigFrom(file, DEFAULT_CONFIG_PATH);
}
