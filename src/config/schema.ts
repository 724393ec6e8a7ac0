/**
 * The schema mechanism. A schema is a flat list of rows, one per key (plus optional section rows that
 * only carry a doc, and map rows for `[name.<entry>]` tables with a sub-schema). Everything else is
 * derived from it by the walkers below and in render.ts: defaults, validation and merging, the JSON
 * effective config, the commented default TOML and the reference docs. Adding a key is adding a row
 * (and its field in the hand-written Config type; a test keeps the two in step).
 */
import type { TomlTable, TomlValue } from 'smol-toml';
import type { ConfigProblem } from './errors.js';
import { closest } from './suggest.js';
import { formatKey } from './toml-text.js';
import { describe, isTable, type Encoded, type ValueType } from './value-types.js';

export interface KeyRow {
  readonly kind: 'key';
  /** Dotted path from the schema's root: `stream.port`. */
  readonly path: string;
  readonly type: ValueType<unknown>;
  readonly default: unknown;
  /** Plain text, wrapped when rendered; `\n` forces a line break. */
  readonly doc: string;
  /** Redacted in the JSON effective config when non-empty (passwords, tokens). */
  readonly secret: boolean;
}

export interface SectionRow {
  readonly kind: 'section';
  readonly path: string;
  readonly doc: string;
}

export interface MapRow {
  readonly kind: 'map';
  readonly path: string;
  /** Rows of each entry, with paths relative to the entry. */
  readonly entry: readonly Row[];
  /** Built-in entries; keys they leave out take the sub-schema defaults. */
  readonly defaults: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
  /** What an entry name may be (names become paths and RuntimeClass handlers, so they are checked). */
  readonly entryName: ValueType<string>;
  /** Entry name used for the commented-out example when there are no built-in entries. */
  readonly example: string;
  readonly doc: string;
}

export type Row = KeyRow | SectionRow | MapRow;

/** A key row. `defaultValue` is checked against the value type at compile time. */
export function key<T>(
  path: string,
  type: ValueType<T>,
  defaultValue: NoInfer<T>,
  doc: string,
  options: { secret?: boolean } = {},
): KeyRow {
  return {
    kind: 'key',
    path,
    type,
    default: defaultValue,
    doc,
    secret: options.secret ?? false,
  };
}

/** A doc for a section (`[grpc]`); sections also appear implicitly from their keys' paths. */
export function section(path: string, doc: string): SectionRow {
  return { kind: 'section', path, doc };
}

/** A map of tables, `[path.<name>]`, each entry following `entry`'s rows. */
export function mapOf<E>(
  path: string,
  entry: readonly Row[],
  defaults: Readonly<Record<string, Partial<E>>>,
  doc: string,
  options: { entryName: ValueType<string>; example: string },
): MapRow {
  return { kind: 'map', path, entry, defaults, doc, ...options };
}

export interface KeyNode {
  readonly kind: 'key';
  readonly name: string;
  readonly type: ValueType<unknown>;
  readonly default: unknown;
  readonly doc: string;
  readonly secret: boolean;
}

export interface TableNode {
  readonly kind: 'table';
  readonly name: string;
  readonly doc: string;
  /** In schema order, which is render order. */
  readonly children: ReadonlyMap<string, SchemaNode>;
}

export interface MapNode {
  readonly kind: 'map';
  readonly name: string;
  readonly entry: TableNode;
  /** Built-in entries, complete (sub-schema defaults filled in). */
  readonly defaults: ReadonlyMap<string, Readonly<Record<string, unknown>>>;
  readonly entryName: ValueType<string>;
  readonly example: string;
  readonly doc: string;
}

export type SchemaNode = KeyNode | TableNode | MapNode;

interface TableBuilder {
  kind: 'table';
  name: string;
  doc: string;
  children: Map<string, SchemaNode>;
}

/** Builds the tree from rows; a malformed schema is a bug, so it throws at module load. */
export function compileSchema(rows: readonly Row[]): TableNode {
  const root: TableBuilder = { kind: 'table', name: '', doc: '', children: new Map() };
  for (const row of rows) {
    const segments = row.path.split('.');
    const name = segments.pop() ?? '';
    if (name === '' || segments.includes('')) throw new Error(`config schema: bad path "${row.path}"`);
    let parent = root;
    for (const segment of segments) parent = tableAt(parent, segment, row.path);
    switch (row.kind) {
      case 'section': {
        const table = tableAt(parent, name, row.path);
        if (table.doc !== '') throw new Error(`config schema: section "${row.path}" documented twice`);
        table.doc = row.doc;
        break;
      }
      case 'key':
        addChild(
          parent,
          { kind: 'key', name, type: row.type, default: row.default, doc: row.doc, secret: row.secret },
          row.path,
        );
        break;
      case 'map': {
        const entry = compileSchema(row.entry);
        const defaults = new Map<string, Record<string, unknown>>();
        for (const [entryName, partial] of Object.entries(row.defaults)) {
          const unknown = Object.keys(partial).filter((k) => !entry.children.has(k));
          if (unknown.length > 0)
            throw new Error(`config schema: "${row.path}.${entryName}" sets unknown ${unknown.join(', ')}`);
          defaults.set(entryName, { ...defaultsOf(entry), ...structuredClone(partial) });
        }
        const { doc, entryName, example } = row;
        addChild(parent, { kind: 'map', name, entry, defaults, entryName, example, doc }, row.path);
        break;
      }
    }
  }
  return root;
}

function tableAt(parent: TableBuilder, name: string, path: string): TableBuilder {
  const existing = parent.children.get(name);
  if (existing === undefined) {
    const table: TableBuilder = { kind: 'table', name, doc: '', children: new Map() };
    parent.children.set(name, table);
    return table;
  }
  if (existing.kind !== 'table') throw new Error(`config schema: "${path}" nests under a ${existing.kind}`);
  return existing as TableBuilder;
}

function addChild(parent: TableBuilder, node: SchemaNode, path: string): void {
  if (parent.children.has(node.name)) throw new Error(`config schema: "${path}" defined twice`);
  parent.children.set(node.name, node);
}

/** A fresh, deep-copied default value tree for `table`. */
export function defaultsOf(table: TableNode): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const node of table.children.values()) {
    if (node.kind === 'key') out[node.name] = structuredClone(node.default);
    else if (node.kind === 'table') out[node.name] = defaultsOf(node);
    else
      out[node.name] = Object.fromEntries(
        [...node.defaults].map(([n, entry]) => [n, structuredClone(entry)]),
      );
  }
  return out;
}

/** Where unknown-key suggestions look beyond the current table: the whole schema or one map entry. */
interface Scope {
  readonly root: TableNode;
  readonly prefix: readonly string[];
  /** Set inside a map entry, for the "quote names containing dots" hint. */
  readonly map?: { readonly path: readonly string[]; readonly node: MapNode };
}

/**
 * Validates `raw` against `table` and writes the decoded values over `target` (which holds defaults),
 * so a partial file merges over the defaults key by key. Every problem is collected, not just the
 * first. Map entries are merged over the built-in entry of the same name, or over the sub-schema
 * defaults for a new name; an entry is kept even when some of its keys are invalid so that checks
 * across keys (a default handler naming it) do not report a second, misleading problem.
 */
export function decodeTable(
  table: TableNode,
  raw: TomlTable,
  target: Record<string, unknown>,
  problems: ConfigProblem[],
  at: readonly string[] = [],
  scope: Scope = { root: table, prefix: [] },
): void {
  for (const [name, value] of Object.entries(raw)) {
    const path = [...at, name];
    const node = table.children.get(name);
    if (node === undefined) {
      problems.push(unknownKey(table, name, value, path, scope));
    } else if (node.kind === 'key') {
      const decoded = node.type.decode(value);
      if (decoded.ok) target[name] = decoded.value;
      else {
        for (const p of decoded.problems) {
          problems.push({
            keyPath: formatKey(path) + p.suffix,
            message: `expected ${p.expected}; found ${p.found}`,
          });
        }
      }
    } else if (!isTable(value)) {
      problems.push({ keyPath: formatKey(path), message: `expected a table; found ${describe(value)}` });
    } else if (node.kind === 'table') {
      decodeTable(node, value, record(target, name), problems, path, scope);
    } else {
      decodeMap(node, value, record(target, name), problems, path);
    }
  }
}

function decodeMap(
  node: MapNode,
  raw: TomlTable,
  target: Record<string, unknown>,
  problems: ConfigProblem[],
  at: readonly string[],
): void {
  for (const [name, value] of Object.entries(raw)) {
    const path = [...at, name];
    const checkedName = node.entryName.decode(name);
    if (!checkedName.ok) {
      for (const p of checkedName.problems) {
        problems.push({ keyPath: formatKey(path), message: `expected ${p.expected}; found ${p.found}` });
      }
    }
    if (!isTable(value)) {
      problems.push({ keyPath: formatKey(path), message: `expected a table; found ${describe(value)}` });
      continue;
    }
    const existing = target[name];
    const entry = checkedName.ok && isRecord(existing) ? existing : defaultsOf(node.entry);
    decodeTable(node.entry, value, entry, problems, path, {
      root: node.entry,
      prefix: path,
      map: { path: at, node },
    });
    if (checkedName.ok) target[name] = entry;
  }
}

function unknownKey(
  table: TableNode,
  name: string,
  value: TomlValue,
  path: readonly string[],
  scope: Scope,
): ConfigProblem {
  const keyPath = formatKey(path);
  const near = closest(name, table.children.keys());
  const parentPath = path.slice(0, -1);
  const suggestion = near === undefined ? elsewhere(scope, name) : formatKey([...parentPath, near]);
  if (suggestion !== undefined) return { keyPath, message: `unknown key; did you mean "${suggestion}"?` };
  const quoted = scope.map === undefined ? undefined : dottedEntryName(scope, name, value);
  if (quoted !== undefined) {
    return { keyPath, message: `unknown key; a name containing "." must be quoted, as in [${quoted}]` };
  }
  return { keyPath, message: 'unknown key' };
}

/**
 * `[registries.registry.k8s.io]` parses as entry "registry" holding table "k8s" holding "io": the
 * host needed quotes. Rebuild the name the operator meant (following single-key tables down) and,
 * if that is a valid entry name, return the header they should have written.
 */
function dottedEntryName(scope: Scope, name: string, value: TomlValue): string | undefined {
  const map = scope.map;
  const entry = scope.prefix.at(-1);
  if (map === undefined || entry === undefined || !isTable(value)) return undefined;
  let joined = `${entry}.${name}`;
  let inner: TomlTable = value;
  for (;;) {
    const keys = Object.keys(inner);
    const [only] = keys;
    const next = only === undefined ? undefined : inner[only];
    if (
      keys.length !== 1 ||
      only === undefined ||
      map.node.entry.children.has(only) ||
      next === undefined ||
      !isTable(next)
    )
      break;
    joined = `${joined}.${only}`;
    inner = next;
  }
  return map.node.entryName.decode(joined).ok ? formatKey([...map.path, joined]) : undefined;
}

/**
 * A key put in the wrong table (`level` at the top instead of under `[log]`) is not a typo, so edit
 * distance misses it; suggest the one place in scope that has exactly that name, if there is one.
 */
function elsewhere(scope: Scope, name: string): string | undefined {
  const found: string[][] = [];
  const visit = (table: TableNode, at: string[]): void => {
    for (const node of table.children.values()) {
      if (node.name === name) found.push([...at, node.name]);
      if (node.kind === 'table') visit(node, [...at, node.name]);
    }
  };
  visit(scope.root, []);
  const [only] = found;
  return found.length === 1 && only !== undefined ? formatKey([...scope.prefix, ...only]) : undefined;
}

/** The JSON form of a value tree: durations as strings, secrets redacted when `redact` is set. */
export function encodeTable(
  table: TableNode,
  value: Record<string, unknown>,
  redact: boolean,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const node of table.children.values()) {
    const child = value[node.name];
    if (node.kind === 'key') out[node.name] = encodeKey(node, child, redact);
    else if (node.kind === 'table') out[node.name] = encodeTable(node, record(value, node.name), redact);
    else {
      const entries = Object.entries(record(value, node.name));
      out[node.name] = Object.fromEntries(
        entries.map(([n, entry]) => [n, encodeTable(node.entry, asRecord(entry, n), redact)]),
      );
    }
  }
  return out;
}

export function encodeKey(node: KeyNode, value: unknown, redact: boolean): Encoded {
  const encoded = node.type.encode(value);
  return redact && node.secret && encoded !== '' ? '<redacted>' : encoded;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A table of a value tree; the trees are built from the schema, so anything else is a bug. */
export function asRecord(value: unknown, name: string): Record<string, unknown> {
  if (!isRecord(value)) throw new Error(`config: "${name}" is not a table in the value tree`);
  return value;
}

/** The sub-table `name` of a value tree. */
export function record(value: Record<string, unknown>, name: string): Record<string, unknown> {
  return asRecord(value[name], name);
}
