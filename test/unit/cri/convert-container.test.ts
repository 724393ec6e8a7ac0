import { describe, expect, it } from 'vitest';
import type { ContainerRecord, ContainerState } from '../../../src/container/record.js';
import { toCriContainer, toCriContainerStatus } from '../../../src/cri/convert/container.js';
import { toContainerConfig } from '../../../src/cri/convert/container-config.js';
import { listedContainer, serializeContainers } from '../../../src/cri/container-wire.js';
import {
  Container,
  ContainerConfig,
  ContainerState as CriState,
  type ImageSpec,
  ListContainersResponse,
  StreamContainersResponse,
} from '../../../src/cri/gen/runtime/v1/api.js';

const IMAGE_ID = `sha256:${'7e'.repeat(32)}`;

function containerRecord(
  n: number,
  over: {
    state?: ContainerState;
    image?: Partial<ImageSpec>;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  } = {},
): ContainerRecord {
  const id = n.toString(16).padStart(8, '0').repeat(8);
  return {
    metadata: {
      version: 1,
      id,
      sandboxId: `${'ab'.repeat(31)}${(n % 7).toString().padStart(2, '0')}`,
      config: toContainerConfig(
        ContainerConfig.fromPartial({
          metadata: { name: `c-${n}`, attempt: n % 3 },
          image: { image: 'registry.test/busybox:latest', ...over.image },
          labels: over.labels ?? { app: 'test', 'io.kubernetes.pod.name': `pod-${n % 7}` },
          annotations: over.annotations ?? (n % 2 ? { 'io.kubernetes.container.hash': `${n}` } : {}),
        }),
      ),
      imageId: IMAGE_ID,
      chainId: `sha256:${'cd'.repeat(32)}`,
      imageName: 'registry.test/busybox:latest',
      imageRef: `registry.test/busybox@sha256:${'45'.repeat(32)}`,
      logPath: '',
      runtimeHandler: 'runc',
      stopSignal: 'SIGTERM',
      cgroupsPath: '',
      user: { uid: 0, gid: 0, additionalGids: [] },
      createdAt: (1_795_882_046_013_000_000n + BigInt(n)).toString(),
    },
    status: {
      version: 1,
      state: over.state ?? 'created',
      pid: 0,
      startedAt: '0',
      finishedAt: '0',
      exitCode: 0,
      reason: '',
      message: '',
    },
  };
}

describe('toCriContainer', () => {
  it('carries what crictl ps and kubelet read', () => {
    const r = containerRecord(5, { state: 'running' });
    expect(toCriContainer(r)).toEqual({
      id: r.metadata.id,
      podSandboxId: r.metadata.sandboxId,
      metadata: { name: 'c-5', attempt: 2 },
      image: {
        image: 'registry.test/busybox:latest',
        annotations: {},
        userSpecifiedImage: '',
        runtimeHandler: '',
        imageRef: '',
      },
      // The image id, as containerd's list: what kubelet's image GC matches against ListImages.
      imageRef: IMAGE_ID,
      imageId: '',
      state: CriState.CONTAINER_RUNNING,
      createdAt: 1_795_882_046_013_000_005n,
      labels: { app: 'test', 'io.kubernetes.pod.name': 'pod-5' },
      annotations: { 'io.kubernetes.container.hash': '5' },
    });
  });

  it('keeps the repo digest as image_ref in ContainerStatus (kubelet shows it as the imageID)', () => {
    const r = containerRecord(3);
    expect(toCriContainerStatus(r).imageRef).toBe(r.metadata.imageRef);
    expect(toCriContainerStatus(r).imageId).toBe(IMAGE_ID);
  });

  it('sets user_specified_image only when the create request did (kubelet: the pod spec image)', () => {
    const kubelet = containerRecord(1, { image: { image: IMAGE_ID, userSpecifiedImage: 'busybox' } });
    expect(toCriContainer(kubelet).image?.userSpecifiedImage).toBe('busybox');
    expect(toCriContainerStatus(kubelet).image?.userSpecifiedImage).toBe('busybox');
    const crictl = containerRecord(2);
    expect(toCriContainer(crictl).image?.userSpecifiedImage).toBe('');
    expect(toCriContainerStatus(crictl).image?.userSpecifiedImage).toBe('');
  });
});

const states: ContainerState[] = ['created', 'running', 'exited', 'unknown'];

/** What the generated encoder writes for the response. */
function generated(containers: Container[]): Buffer {
  return Buffer.from(ListContainersResponse.encode({ containers }).finish());
}

describe('the container list wire form', () => {
  it('is byte for byte what the generated encoder writes, and decodes to the same message', () => {
    const records = Array.from({ length: 500 }, (_, n) =>
      containerRecord(n, {
        state: states[n % 4],
        ...(n % 5 === 0 ? { image: { userSpecifiedImage: `busybox:${n}` } } : {}),
        // Entries of 1-, 2- and 3-byte varint lengths.
        ...(n === 7 ? { annotations: { big: 'x'.repeat(20_000) } } : {}),
        ...(n === 8 ? { labels: {}, annotations: {} } : {}),
      }),
    );
    const containers = records.map(listedContainer);
    const bytes = serializeContainers({ containers });
    expect(bytes.equals(generated(records.map(toCriContainer)))).toBe(true);
    expect(ListContainersResponse.decode(bytes)).toEqual({ containers: records.map(toCriContainer) });
    expect(
      StreamContainersResponse.decode(serializeContainers({ containers: containers.slice(0, 100) })),
    ).toEqual({ containers: records.slice(0, 100).map(toCriContainer) });
    expect(serializeContainers({ containers: [] })).toHaveLength(0);
  });

  it('keeps one message per record and state, and a new state gives a new one', () => {
    const r = containerRecord(3, { state: 'created' });
    const created = listedContainer(r);
    expect(listedContainer(r)).toBe(created);
    // The store replaces a record's status when it writes it.
    r.status = { ...r.status, state: 'running', pid: 42, startedAt: '1' };
    const running = listedContainer(r);
    expect(running).not.toBe(created);
    expect(running.state).toBe(CriState.CONTAINER_RUNNING);
    expect(serializeContainers({ containers: [running] }).equals(generated([running]))).toBe(true);
    expect(
      ListContainersResponse.decode(serializeContainers({ containers: [running] })).containers[0]?.state,
    ).toBe(CriState.CONTAINER_RUNNING);
  });

  it('answers the same list again with the same bytes, and a changed list with its own', () => {
    const records = Array.from({ length: 20 }, (_, n) => containerRecord(100 + n));
    const first = serializeContainers({ containers: records.map(listedContainer) });
    expect(serializeContainers({ containers: records.map(listedContainer) })).toBe(first);
    const fewer = serializeContainers({ containers: records.slice(1).map(listedContainer) });
    expect(fewer.equals(generated(records.slice(1).map(toCriContainer)))).toBe(true);
    const r = records[5];
    if (!r) throw new Error('no record');
    r.status = { ...r.status, state: 'exited' };
    const changed = serializeContainers({ containers: records.map(listedContainer) });
    expect(changed).not.toBe(first);
    expect(changed.equals(generated(records.map(toCriContainer)))).toBe(true);
    // A caller's array changed after the call does not change what the same list is taken to be.
    const containers = records.map(listedContainer);
    const bytes = serializeContainers({ containers });
    containers.reverse();
    expect(serializeContainers({ containers })).not.toBe(bytes);
    expect(serializeContainers({ containers }).equals(generated(containers))).toBe(true);
  });

  it('encodes Container messages it did not make with the generated encoder', () => {
    const own = Container.fromPartial({ id: 'x', labels: { a: 'b' }, state: CriState.CONTAINER_EXITED });
    const mixed = [listedContainer(containerRecord(1)), own, listedContainer(containerRecord(2))];
    expect(serializeContainers({ containers: mixed }).equals(generated(mixed))).toBe(true);
    // Not cached, alone or in a list: a later change to the caller's object is sent as it then is.
    own.labels = { a: 'c' };
    expect(
      ListContainersResponse.decode(serializeContainers({ containers: [own] })).containers[0]?.labels,
    ).toEqual({ a: 'c' });
    own.labels = { a: 'd' };
    expect(serializeContainers({ containers: mixed }).equals(generated(mixed))).toBe(true);
  });
});
