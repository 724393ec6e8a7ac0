/**
 * ListContainers and StreamContainers without re-encoding every container on every call.
 *
 * kubelet lists all containers every second or so, and a node has hundreds of them; each call used to
 * build every `Container` message and protobuf-encode it again (strings to UTF-8, maps entry by entry),
 * about half of the call's time with 500 containers. A container's record metadata never changes and the
 * one field of `Container` that does, `state`, comes from its status, so the message and its encoded
 * bytes are made once per record and state and kept beside the record (weakly: a removed container's
 * entry goes with it). A response is then those bytes framed as its repeated field 1, which is
 * exactly what the generated encoder writes for the same message.
 */
import type { ContainerMetadata, ContainerRecord, ContainerState } from '../container/record.js';
import { toCriContainer } from './convert/container.js';
import { Container } from './gen/runtime/v1/api.js';

interface Listed {
  state: ContainerState;
  message: Container;
}

const listed = new WeakMap<ContainerMetadata, Listed>();

/**
 * `Container` entry field of ListContainersResponse and StreamContainersResponse (field 1, wire type 2:
 * tag 0x0a), its length (varint) and the encoded message, for the messages `listedContainer` made.
 */
const framed = new WeakMap<Container, Uint8Array>();

/**
 * The CRI `Container` for a record: the same message object while the record's state stays the same.
 * Callers must not modify it (its encoding is cached with it).
 */
export function listedContainer(r: ContainerRecord): Container {
  const hit = listed.get(r.metadata);
  if (hit?.state === r.status.state) return hit.message;
  const message = toCriContainer(r);
  listed.set(r.metadata, { state: r.status.state, message });
  framed.set(message, frame(Container.encode(message).finish()));
  return message;
}

function frame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + varintSize(body.length) + body.length);
  out[0] = 0x0a;
  out.set(body, writeVarint(out, 1, body.length));
  return out;
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    size++;
  }
  return size;
}

/** Writes `n` (a non-negative integer) as a protobuf varint at `offset`; returns the offset after it. */
function writeVarint(out: Uint8Array, offset: number, n: number): number {
  while (n >= 0x80) {
    out[offset++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  out[offset++] = n;
  return offset;
}

/**
 * The last answer made only of `listedContainer` messages, and its bytes: kubelet's next list is usually
 * the same containers in the same states, and then the same bytes (grpc-js copies them into its frame).
 */
let last: { containers: Container[]; bytes: Buffer } | undefined;

/**
 * The serializer of ListContainersResponse and StreamContainersResponse (`repeated Container containers =
 * 1`, nothing else): the cached bytes of each container from `listedContainer`, the generated encoder for
 * any other `Container` object.
 */
export function serializeContainers(message: { containers: Container[] }): Buffer {
  const { containers } = message;
  if (last && sameMessages(last.containers, containers)) return last.bytes;
  const parts: Uint8Array[] = [];
  let size = 0;
  let allListed = true;
  for (const c of containers) {
    let part = framed.get(c);
    if (!part) {
      part = frame(Container.encode(c).finish());
      allListed = false;
    }
    parts.push(part);
    size += part.length;
  }
  const out = Buffer.allocUnsafe(size);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  if (allListed) last = { containers: [...containers], bytes: out };
  return out;
}

function sameMessages(a: Container[], b: Container[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
