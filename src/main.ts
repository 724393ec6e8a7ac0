#!/usr/bin/env -S node --max-semi-space-size=2
/**
 * skiff's command line: `serve`, `config default`, `config check FILE`, `--version`. The only place that
 * calls process.exit. Exit status: 0 success, 1 runtime failure, 2 usage or configuration error.
 */
import { ConfigError, loadConfig, renderDefaultConfig } from './config/index.js';
import { Daemon } from './daemon.js';
import { messageOf } from './errdefs.js';
import { Logger } from './log.js';
import { SKIFF_VERSION } from './version.js';

const USAGE = `usage: skiff <command> [options]

commands:
  serve [--config FILE]   run the CRI daemon (default config /etc/skiff/config.toml; built-in defaults
                          when that file does not exist)
  config default          print the full default configuration as TOML
  config check FILE       validate a configuration file (exit 0 when valid, 2 when not)
  version, --version      print skiff's version
`;

class UsageError extends Error {}

function takeConfigFlag(args: string[]): string | undefined {
  let file: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    if (a === '--config' || a === '-c') {
      file = args[i + 1];
      if (file === undefined) throw new UsageError(`${a} needs a file path`);
      i++;
    } else if (a.startsWith('--config=')) {
      file = a.slice('--config='.length);
    } else {
      throw new UsageError(`unknown option "${a}"`);
    }
  }
  return file;
}

async function serve(args: string[]): Promise<number> {
  const { config, source } = await loadConfig(takeConfigFlag(args));
  const log = new Logger({ level: config.log.level, format: config.log.format });
  process.on('unhandledRejection', (reason) => {
    log.error('unhandled promise rejection (a bug)', {
      error: reason,
      stack: reason instanceof Error ? reason.stack : undefined,
    });
  });
  const daemon = await Daemon.start({ config, configSource: source, log });
  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (stopping) {
        log.warn('second signal: exiting without waiting', { signal });
        resolve(1);
        return;
      }
      stopping = true;
      log.info('signal received, shutting down', { signal });
      daemon.stop().then(
        () => {
          resolve(0);
        },
        (err: unknown) => {
          log.error('shutdown failed', { error: err });
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'serve':
      return serve(rest);
    case 'config': {
      const [sub, ...subArgs] = rest;
      if (sub === 'default' && subArgs.length === 0) {
        process.stdout.write(renderDefaultConfig());
        return 0;
      }
      if (sub === 'check' && subArgs.length === 1 && subArgs[0]) {
        await loadConfig(subArgs[0]);
        process.stdout.write(`${subArgs[0]}: ok\n`);
        return 0;
      }
      throw new UsageError('config takes "default" or "check FILE"');
    }
    case 'version':
    case '--version':
    case '-v':
      process.stdout.write(`skiff ${SKIFF_VERSION}\n`);
      return 0;
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return 0;
    case undefined:
      throw new UsageError('no command given');
    default:
      throw new UsageError(`unknown command "${cmd}"`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exit(code);
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`skiff: ${err.message}\n\n${USAGE}`);
      process.exit(2);
    }
    if (err instanceof ConfigError) {
      process.stderr.write(`skiff: invalid configuration:\n${err.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`skiff: ${messageOf(err)}\n`);
    process.exit(1);
  },
);
