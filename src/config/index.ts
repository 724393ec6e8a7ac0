/**
 * skiff's configuration: one TOML file (default /etc/skiff/config.toml) described by a single schema
 * table (keys.ts) from which validation, defaults, the commented default file, the JSON effective
 * config and the docs are all derived.
 */
export { ConfigError } from './errors.js';
export type { Config, RegistryConfig, RuntimeHandlerConfig } from './keys.js';
export { DEFAULT_CONFIG_PATH, defaultConfig, loadConfig, parseConfig } from './load.js';
export { configToJSON, renderDefaultConfig } from './render.js';
