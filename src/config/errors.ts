/**
 * Config errors are their own class rather than a SkiffError: they happen before the daemon serves
 * anything, carry no gRPC code, and `main` turns them into exit status 2 (usage/config error, as
 * distinct from a runtime failure) with the message printed as is.
 */

/** One thing wrong with a config file. */
export interface ConfigProblem {
  /** Dotted TOML key, e.g. `log.level`, `registries."docker.io".mirrors[1]`. */
  readonly keyPath: string;
  /** What is wrong: `expected …; found …` or `unknown key; did you mean …?`. */
  readonly message: string;
}

export interface ConfigErrorOptions {
  readonly file?: string | undefined;
  readonly keyPath?: string | undefined;
  readonly problems?: readonly ConfigProblem[];
  readonly cause?: unknown;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  /** The config file, when the text came from one. */
  readonly file: string | undefined;
  /** The key of the (first) problem; undefined for file-level errors (unreadable, bad TOML syntax). */
  readonly keyPath: string | undefined;
  /** Every validation problem, in the order reported; empty for file-level errors. */
  readonly problems: readonly ConfigProblem[];
  /** Exit status for `main`: 2, a configuration error rather than a runtime failure. */
  readonly exitCode = 2;

  constructor(message: string, options: ConfigErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.file = options.file;
    this.keyPath = options.keyPath;
    this.problems = options.problems ?? [];
  }

  /**
   * One error for all problems, one line each, so an operator can fix a file in one pass:
   * `/etc/skiff/config.toml: key "log.level": expected one of …; found "verbose"`.
   */
  static fromProblems(problems: readonly ConfigProblem[], file: string | undefined): ConfigError {
    const prefix = file === undefined ? '' : `${file}: `;
    const message = problems.map((p) => `${prefix}key "${p.keyPath}": ${p.message}`).join('\n');
    return new ConfigError(message, { file, keyPath: problems[0]?.keyPath, problems });
  }
}
