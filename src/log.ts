/**
 * Structured logging: one JSON object a line (for journald / log shippers), or a human-readable line when
 * stderr is a TTY or `[log] format = "text"`. Messages are lowercase event phrases; context goes in fields
 * (`rpc`, `sandboxId`, `containerId`, `image`, `durationMs`, `code`). Child loggers carry fields along.
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'json' | 'text';
export type LogFields = Record<string, unknown>;

const levelRank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LogSink {
  write(line: string): void;
}

export interface LoggerOptions {
  level: LogLevel;
  /** `auto` picks text when the sink is a TTY, JSON otherwise. */
  format: LogFormat | 'auto';
  sink?: LogSink & { isTTY?: boolean };
}

export class Logger {
  private readonly rank: number;
  private readonly format: LogFormat;
  private readonly sink: LogSink;

  constructor(
    options: LoggerOptions,
    private readonly fields: LogFields = {},
  ) {
    this.rank = levelRank[options.level];
    const sink = options.sink ?? process.stderr;
    this.sink = sink;
    this.format = options.format === 'auto' ? (sink.isTTY === true ? 'text' : 'json') : options.format;
  }

  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger {
    const child = Object.create(Logger.prototype) as Logger;
    Object.assign(child, this, { fields: { ...this.fields, ...fields } });
    return child;
  }

  isEnabled(level: LogLevel): boolean {
    return levelRank[level] >= this.rank;
  }

  debug(msg: string, fields?: LogFields): void {
    this.emit('debug', msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.emit('info', msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.emit('warn', msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.emit('error', msg, fields);
  }

  private emit(level: LogLevel, msg: string, fields?: LogFields): void {
    if (!this.isEnabled(level)) return;
    const all: LogFields = { ...this.fields, ...fields };
    const time = new Date().toISOString();
    if (this.format === 'json') {
      this.sink.write(`${JSON.stringify({ time, level, msg, ...normalise(all) })}\n`);
      return;
    }
    const rest = Object.entries(normalise(all))
      .map(([k, v]) => `${k}=${typeof v === 'string' && !/[\s"=]/.test(v) ? v : JSON.stringify(v)}`)
      .join(' ');
    this.sink.write(`${time} ${level.toUpperCase().padEnd(5)} ${msg}${rest ? ` ${rest}` : ''}\n`);
  }
}

/** Errors become their message (and stack for non-domain errors); bigints become strings. */
function normalise(fields: LogFields): LogFields {
  const out: LogFields = {};
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    if (v instanceof Error) out[k] = v.message;
    else if (typeof v === 'bigint') out[k] = v.toString();
    else out[k] = v;
  }
  return out;
}

/** A logger that drops everything (unit tests that do not look at logs). */
export function silentLogger(): Logger {
  return new Logger({ level: 'error', format: 'json', sink: { write: () => undefined } });
}
