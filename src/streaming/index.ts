/** The streaming server and the runtime interface it calls; see server.ts and types.ts. */
export { StreamServer, type StreamServerOptions } from './server.js';
export type {
  AttachRequest,
  ExecRequest,
  PortForwardRequest,
  StreamIO,
  StreamRuntime,
  TerminalSize,
} from './types.js';
