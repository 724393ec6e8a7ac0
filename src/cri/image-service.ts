/**
 * ImageService: CRI requests in, domain calls out. Nothing is built yet; every RPC answers UNIMPLEMENTED
 * naming itself (the wrapper does that for absent entries).
 */
import type { ImageHandlers } from './server.js';

export function imageService(): ImageHandlers {
  return {};
}
