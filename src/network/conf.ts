/**
 * CNI network configuration: finding the pod network's file the way libcni and containerd do (the first
 * `.conf`, `.conflist` or `.json` in `conf_dir`, in lexical order), parsing and validating it (CNI SPEC.md
 * 1.0.0, "Section 1: Network configuration format"), wrapping a single-plugin `.conf` into a list, and the
 * built-in default network used when `conf_dir` holds none.
 *
 * The parsers are pure; `findConfFile` and `loadConfFile` are the only functions that touch the disk.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { SkiffError, messageOf } from '../errdefs.js';

/** One plugin configuration object (SPEC §1 "Plugin configuration objects"); unknown keys pass through. */
export interface PluginConf {
  type: string;
  capabilities?: Record<string, unknown>;
  [key: string]: unknown;
}

/** A network configuration list (SPEC §1 "Configuration format"), plus where it came from. */
export interface NetworkConfList {
  name: string;
  cniVersion: string;
  disableCheck: boolean;
  plugins: PluginConf[];
  /** The file it was read from, or `embedded default`. */
  source: string;
}

/** The extensions libcni's `ConfFiles` accepts for the pod network. */
export const CONF_EXTENSIONS: readonly string[] = ['.conf', '.conflist', '.json'];

export const DEFAULT_CONF_DIR = '/etc/cni/net.d';
export const DEFAULT_BIN_DIRS: readonly string[] = ['/opt/cni/bin', '/usr/lib/cni'];
export const DEFAULT_NETWORK_NAME = 'skiff';
export const DEFAULT_BRIDGE_NAME = 'skiff0';
export const EMBEDDED_SOURCE = 'embedded default';

/**
 * SPEC §1 "Configuration format", `name`: "Must start with an alphanumeric character, optionally followed
 * by any combination of one or more alphanumeric characters, underscore, dot (.) or hyphen (-)."
 */
const NETWORK_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const SEMVER = /^\d+\.\d+\.\d+$/;

/**
 * The file that defines the pod network among `names` (entries of conf_dir): the first, in lexical byte
 * order (Go's sort.Strings, as libcni sorts), whose extension is `.conf`, `.conflist` or `.json`.
 */
export function sortConfFiles(names: readonly string[]): string[] {
  return names
    .filter((n) => CONF_EXTENSIONS.includes(extname(n)))
    .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

/**
 * Parses one configuration file's text. A `.conflist` is a list (SPEC §1); a `.conf` or `.json` is a single
 * plugin configuration that libcni's `ConfListFromConf` wraps into a list of one, keeping its name and
 * version. Throws `invalid-argument` naming the file and what is wrong.
 */
export function parseConfFile(file: string, text: string): NetworkConfList {
  const fail = (what: string): never => {
    throw new SkiffError('invalid-argument', `load cni config ${file}: ${what}`);
  };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return fail(`invalid JSON: ${messageOf(err)}`);
  }
  if (!isObject(raw)) return fail('expected a JSON object');
  if (extname(file) === '.conflist') return parseConfList(raw, file, fail);
  if (raw.type === undefined && Array.isArray(raw.plugins)) {
    return fail('it holds a "plugins" list: a configuration list must be named *.conflist');
  }
  const plugin = parsePlugin(raw, 'the configuration', fail);
  return {
    name: parseName(raw.name, fail),
    cniVersion: parseVersion(raw.cniVersion, fail),
    disableCheck: false,
    plugins: [plugin],
    source: file,
  };
}

function parseConfList(
  raw: Record<string, unknown>,
  file: string,
  fail: (what: string) => never,
): NetworkConfList {
  const name = parseName(raw.name, fail);
  const cniVersion = parseVersion(raw.cniVersion, fail);
  // SPEC §1 `disableCheck` (boolean); libcni also accepts the strings "true" / "false".
  let disableCheck = false;
  const dc = raw.disableCheck;
  if (dc === true || dc === 'true') disableCheck = true;
  else if (dc !== undefined && dc !== false && dc !== 'false') fail('"disableCheck" must be a boolean');
  if (!Array.isArray(raw.plugins)) return fail('"plugins" must be a list of plugin configurations');
  if (raw.plugins.length === 0) return fail('"plugins" is empty: the network has no plugins to run');
  const plugins = raw.plugins.map((p: unknown, i) => {
    if (!isObject(p)) return fail(`plugins[${i}] must be a JSON object`);
    return parsePlugin(p, `plugins[${i}]`, fail);
  });
  return { name, cniVersion, disableCheck, plugins, source: file };
}

/** SPEC §1 "Plugin configuration objects": `type` is required and names a binary (no path separators). */
function parsePlugin(raw: Record<string, unknown>, where: string, fail: (what: string) => never): PluginConf {
  const type = raw.type;
  if (typeof type !== 'string' || type === '') return fail(`${where} has no "type" (the plugin binary)`);
  if (/[/\\]/.test(type)) return fail(`${where} "type" ${JSON.stringify(type)} must not contain / or \\`);
  if (raw.capabilities !== undefined && !isObject(raw.capabilities)) {
    return fail(`${where} "capabilities" must be a JSON object`);
  }
  if (raw.ipam !== undefined) {
    if (!isObject(raw.ipam)) return fail(`${where} "ipam" must be a JSON object`);
    const ipamType = raw.ipam.type;
    if (ipamType !== undefined && (typeof ipamType !== 'string' || /[/\\]/.test(ipamType))) {
      return fail(`${where} "ipam.type" must be a plugin binary name`);
    }
  }
  return { ...raw, type };
}

function parseName(name: unknown, fail: (what: string) => never): string {
  if (typeof name !== 'string' || name === '') return fail('missing network "name"');
  if (!NETWORK_NAME.test(name)) {
    return fail(
      `network name ${JSON.stringify(name)} must start with a letter or digit, then letters, digits, _ . -`,
    );
  }
  return name;
}

function parseVersion(version: unknown, fail: (what: string) => never): string {
  if (typeof version !== 'string' || version === '') return fail('missing "cniVersion"');
  if (!SEMVER.test(version))
    return fail(`"cniVersion" ${JSON.stringify(version)} is not a version like 1.0.0`);
  return version;
}

/**
 * Every binary a list needs, in order and without repeats: each plugin's `type` and a delegated IPAM
 * plugin's `ipam.type` (SPEC §4 "Plugin Delegation"), since `bridge` cannot work without `host-local`.
 */
export function pluginBinaries(list: NetworkConfList): string[] {
  const names: string[] = [];
  for (const p of list.plugins) {
    names.push(p.type);
    const ipam = p.ipam;
    if (isObject(ipam) && typeof ipam.type === 'string' && ipam.type !== '') names.push(ipam.type);
  }
  return [...new Set(names)];
}

export interface DefaultNetworkOptions {
  /** host-local's subnet, e.g. `10.88.0.0/16`. */
  subnet: string;
  /** The Linux bridge on the host (default `skiff0`). */
  bridgeName: string;
  /** host-local's lease directory (`<cacheDir>/ipam`), so leases live with skiff's state, not in /var/lib/cni. */
  ipamDataDir: string;
}

/**
 * The network used when conf_dir has no configuration, so a node works without any CNI setup: a bridge
 * with host-local addresses and a default route through the bridge, then portmap for hostPorts.
 * Never written to /etc: it lives in memory only.
 */
export function defaultConfList(o: DefaultNetworkOptions): NetworkConfList {
  return {
    name: DEFAULT_NETWORK_NAME,
    cniVersion: '1.0.0',
    disableCheck: false,
    source: EMBEDDED_SOURCE,
    plugins: [
      {
        type: 'bridge',
        bridge: o.bridgeName,
        isGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: {
          type: 'host-local',
          ranges: [[{ subnet: o.subnet }]],
          routes: [{ dst: '0.0.0.0/0' }],
          dataDir: o.ipamDataDir,
        },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
}

/** The file found in conf_dir, and a fingerprint that changes when it (or the choice of file) changes. */
export interface FoundConfFile {
  path: string;
  fingerprint: string;
}

/**
 * The pod network's file in `confDir`, or undefined when there is none (or the directory does not exist).
 * Cheap enough to call on every Status: one readdir and one stat.
 */
export async function findConfFile(confDir: string): Promise<FoundConfFile | undefined> {
  let names: string[];
  try {
    names = await readdir(confDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SkiffError('failed-precondition', `read cni config dir ${confDir}: ${messageOf(err)}`, {
      cause: err,
    });
  }
  for (const name of sortConfFiles(names)) {
    const path = join(confDir, name);
    try {
      const st = await stat(path);
      if (st.isDirectory()) continue;
      return { path, fingerprint: `${path}\0${st.ino}\0${st.size}\0${st.mtimeMs}` };
    } catch {
      continue; // removed meanwhile, or a dangling symlink: libcni skips what it cannot read as a file
    }
  }
  return undefined;
}

/** Reads and parses one configuration file; errors name the file. */
export async function loadConfFile(path: string): Promise<NetworkConfList> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new SkiffError('failed-precondition', `load cni config ${path}: ${messageOf(err)}`, { cause: err });
  }
  return parseConfFile(path, text);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
