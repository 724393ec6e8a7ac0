import { describe, expect, it } from 'vitest';
import type { ContainerRecord, ContainerState } from '../../../src/container/record.js';
import { toCriContainer, toCriContainerStatus } from '../../../src/cri/convert/container.js';
import { toContainerConfig } from '../../../src/cri/convert/container-config.js';
import {
  ContainerConfig,
  ContainerState as CriState,
  type ImageSpec,
} from '../../../src/cri/gen/runtime/v1/api.js';

const IMAGE_ID = `sha256:${'7e'.repeat(32)}`;

function containerRecord(
  n: number,
  over: { state?: ContainerState; image?: Partial<ImageSpec>; labels?: Record<string, string> } = {},
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
          annotations: n % 2 ? { 'io.kubernetes.container.hash': `${n}` } : {},
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
      imageRef: r.metadata.imageRef,
      imageId: IMAGE_ID,
      state: CriState.CONTAINER_RUNNING,
      createdAt: 1_795_882_046_013_000_005n,
      labels: { app: 'test', 'io.kubernetes.pod.name': 'pod-5' },
      annotations: { 'io.kubernetes.container.hash': '5' },
    });
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
