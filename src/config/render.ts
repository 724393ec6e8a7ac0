/**
 * Output forms of a config, all walked from the schema: the commented default TOML (`skiff config
 * default`), the JSON effective config (Status verbose info) and a Markdown key reference.
 */
import { defaultConfig, DEFAULT_CONFIG_PATH } from './load.js';
import { configSchema, type Config } from './keys.js';
import { asRecord, encodeKey, encodeTable, record, type TableNode } from './schema.js';
import { formatKey, tomlKey, tomlString } from './toml-text.js';
import type { Encoded } from './value-types.js';

/** Rendered comment lines are wrapped to this width, so the file reads well in an 100-column editor. */
const commentWidth = 100;

const header = [
  `skiff configuration (TOML). Default location: ${DEFAULT_CONFIG_PATH}.`,
  'Every key below is set to its default, so this file behaves exactly like no file at all. Keys left out of a config file keep their defaults, so a config file needs only the keys it changes.',
].join('\n');

/** The full default config as commented TOML; parsing it gives `defaultConfig()` back. */
export function renderDefaultConfig(): string {
  return renderConfig(defaultConfig(), header);
}

/** `config` as TOML, every key preceded by its doc, sections in schema order. */
export function renderConfig(config: Config, intro = ''): string {
  const lines: string[] = [];
  if (intro !== '') lines.push(...comment(intro), '');
  renderTable(configSchema, config as unknown as Record<string, unknown>, [], lines);
  while (lines.at(-1) === '') lines.pop();
  return `${lines.join('\n')}\n`;
}

function renderTable(
  table: TableNode,
  value: Record<string, unknown>,
  at: readonly string[],
  lines: string[],
): void {
  // A key line belongs to the latest [header], so a table's own keys must come before its sub-tables.
  for (const node of table.children.values()) {
    if (node.kind !== 'key') continue;
    lines.push(
      ...comment(node.doc),
      `${tomlKey(node.name)} = ${tomlValue(encodeKey(node, value[node.name], false))}`,
      '',
    );
  }
  for (const node of table.children.values()) {
    const path = [...at, node.name];
    if (node.kind === 'table') {
      lines.push(...comment(node.doc), `[${formatKey(path)}]`);
      renderTable(node, record(value, node.name), path, lines);
    } else if (node.kind === 'map') {
      lines.push(...comment(node.doc));
      const entries = Object.entries(record(value, node.name));
      if (entries.length === 0) {
        // Nothing to set, but the sub-schema still deserves its docs: show a commented-out example.
        const example: string[] = [`[${formatKey([...path, node.example])}]`];
        renderTable(node.entry, defaultEntry(node.entry), [...path, node.example], example);
        while (example.at(-1) === '') example.pop();
        lines.push('# For example:', ...example.map((line) => (line === '' ? '#' : `# ${line}`)), '');
      }
      for (const [name, entry] of entries) {
        lines.push(`[${formatKey([...path, name])}]`);
        renderTable(node.entry, asRecord(entry, name), [...path, name], lines);
      }
    }
  }
}

function defaultEntry(table: TableNode): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const node of table.children.values()) if (node.kind === 'key') out[node.name] = node.default;
  return out;
}

/** `# `-prefixed lines, word-wrapped; `\n` in a doc forces a break. */
function comment(doc: string): string[] {
  if (doc === '') return [];
  const lines: string[] = [];
  for (const paragraph of doc.split('\n')) {
    let line = '#';
    for (const word of paragraph.split(' ').filter((w) => w !== '')) {
      if (line !== '#' && line.length + 1 + word.length > commentWidth) {
        lines.push(line);
        line = '#';
      }
      line += ` ${word}`;
    }
    lines.push(line);
  }
  return lines;
}

function tomlValue(value: Encoded): string {
  if (typeof value === 'string') return tomlString(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return `[${value.map(tomlValue).join(', ')}]`;
}

/**
 * The effective config as JSON for Status verbose info: the TOML shape (map entries as nested
 * objects), durations as strings, and secrets (registry password, auth, identity_token) replaced by
 * "<redacted>" when set, since Status output ends up in bug reports.
 */
export function configToJSON(config: Config): Record<string, unknown> {
  return encodeTable(configSchema, config as unknown as Record<string, unknown>, true);
}

/** A Markdown table of every key: path, accepted values, default, doc. */
export function renderConfigReference(): string {
  const rows: string[] = ['| Key | Value | Default | Description |', '| --- | --- | --- | --- |'];
  const cell = (text: string): string =>
    text.replace(/\|/g, '\\|').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/\n/g, ' ');
  const code = (text: string): string => `\`${text.replace(/\|/g, '\\|')}\``;
  // `at` is display text: map entries show as `<name>`, which must not be quoted like a real key.
  const visit = (table: TableNode, at: string): void => {
    for (const node of table.children.values()) {
      const path = `${at}${tomlKey(node.name)}`;
      if (node.kind === 'key') {
        const value = tomlValue(encodeKey(node, node.default, false));
        rows.push(`| ${code(path)} | ${cell(node.type.expected)} | ${code(value)} | ${cell(node.doc)} |`);
      } else if (node.kind === 'table') {
        visit(node, `${path}.`);
      } else {
        const names = [...node.defaults.keys()].map(code).join(', ');
        rows.push(
          `| ${code(`${path}.<name>`)} | table | ${names === '' ? 'none' : names} | ${cell(node.doc)} |`,
        );
        visit(node.entry, `${path}.<name>.`);
      }
    }
  };
  visit(configSchema, '');
  return `${rows.join('\n')}\n`;
}
