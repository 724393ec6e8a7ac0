/**
 * ImageService: CRI requests in, domain calls out (src/image/service.ts), CRI messages back.
 */
import { SkiffError } from '../errdefs.js';
import type { ImageRecord } from '../image/image-store.js';
import type { ImageService } from '../image/service.js';
import type { AuthConfig, Image, ImageSpec } from './gen/runtime/v1/api.js';
import type { ImageHandlers } from './server.js';

/** StreamImages sends at most this many images per message, so a large store never hits message limits. */
const STREAM_CHUNK = 100;

function requireImage(spec: ImageSpec | undefined, rpc: string): string {
  const name = spec?.image.trim() ?? '';
  if (!name)
    throw new SkiffError('invalid-argument', `${rpc}: image.image is empty; name an image reference or id`);
  return name;
}

function credentials(auth: AuthConfig | undefined) {
  if (!auth) return undefined;
  return {
    username: auth.username || undefined,
    password: auth.password || undefined,
    auth: auth.auth || undefined,
    identityToken: auth.identityToken || undefined,
    registryToken: auth.registryToken || undefined,
  };
}

/** The uid, or the user name, an image's config.User asks for (`uid`, `uid:gid`, `name`, `name:group`). */
export function imageUser(user: string | undefined): { uid?: bigint; username: string } {
  const u = (user ?? '').split(':')[0] ?? '';
  if (u === '') return { username: '' };
  if (/^\d+$/.test(u)) return { uid: BigInt(u), username: '' };
  return { username: u };
}

export function toCriImage(record: ImageRecord, pinned: boolean): Image {
  const user = imageUser(record.config.config?.User);
  return {
    id: record.id,
    repoTags: record.repoTags,
    repoDigests: record.repoDigests,
    size: BigInt(record.size),
    uid: user.uid === undefined ? undefined : { value: user.uid },
    username: user.username,
    spec: {
      image: record.id,
      annotations: record.annotations,
      userSpecifiedImage: '',
      runtimeHandler: '',
      imageRef: '',
    },
    pinned,
  };
}

export function imageService(images: ImageService): ImageHandlers {
  const list = (filter: string | undefined) =>
    images.list(filter).map((r) => toCriImage(r, images.isPinned(r)));
  return {
    pullImage: async (req) => {
      const record = await images.pull(requireImage(req.image, 'PullImage'), credentials(req.auth));
      return { imageRef: record.id };
    },

    listImages: async (req) => ({ images: list(req.filter?.image?.image || undefined) }),

    streamImages: async (req, _ctx, send) => {
      const all = list(req.filter?.image?.image || undefined);
      for (let i = 0; i < all.length; i += STREAM_CHUNK)
        await send({ images: all.slice(i, i + STREAM_CHUNK) });
    },

    imageStatus: async (req) => {
      const record = images.status(requireImage(req.image, 'ImageStatus'));
      // Per the CRI contract an absent image is a nil image, not an error.
      if (!record) return { image: undefined, info: {} };
      const info: Record<string, string> = {};
      if (req.verbose) {
        info.info = JSON.stringify({
          id: record.id,
          chainID: record.chainId,
          manifestDigest: record.manifestDigest,
          layers: record.layers,
          imageSpec: record.config,
          pulledAt: new Date(record.createdAt).toISOString(),
        });
      }
      return { image: toCriImage(record, images.isPinned(record)), info };
    },

    removeImage: async (req) => {
      await images.remove(requireImage(req.image, 'RemoveImage'));
      return {};
    },

    imageFsInfo: async () => {
      const usage = await images.fsUsage();
      return {
        imageFilesystems: [
          {
            timestamp: BigInt(Date.now()) * 1_000_000n,
            fsId: { mountpoint: usage.mountpoint },
            usedBytes: { value: BigInt(usage.bytes) },
            inodesUsed: { value: BigInt(usage.inodes) },
          },
        ],
        containerFilesystems: [],
      };
    },
  };
}
