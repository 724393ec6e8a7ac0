/**
 * Host configuration → endpoints: mirrors first in order, then the upstream unless fallback is off;
 * Docker Hub's API host; plain HTTP for loopback and insecure registries; TLS and credentials per host.
 */
import { describe, expect, it } from 'vitest';
import { SkiffError } from '../../../../src/errdefs.js';
import {
  endpointsFor,
  isLoopbackHost,
  type RegistryHostOptions,
} from '../../../../src/image/registry/hosts.js';

function opts(o: Partial<RegistryHostOptions> = {}): RegistryHostOptions {
  return {
    mirrors: [],
    insecure: false,
    caFile: '',
    skipVerify: false,
    username: '',
    password: '',
    auth: '',
    identityToken: '',
    fallbackToUpstream: true,
    ...o,
  };
}

const lookup =
  (table: Record<string, RegistryHostOptions>) =>
  (host: string): RegistryHostOptions | undefined =>
    table[host];

const urls = (registry: string, table: Record<string, RegistryHostOptions>): string[] =>
  endpointsFor(registry, lookup(table)).map((e) => e.url);

describe('endpointsFor', () => {
  it('uses registry-1.docker.io for docker.io and https for other registries', () => {
    expect(urls('docker.io', {})).toEqual(['https://registry-1.docker.io']);
    expect(urls('registry.k8s.io', {})).toEqual(['https://registry.k8s.io']);
    expect(urls('quay.io:8443', {})).toEqual(['https://quay.io:8443']);
  });

  it('uses plain HTTP for loopback hosts and insecure registries', () => {
    expect(urls('127.0.0.1:5000', {})).toEqual(['http://127.0.0.1:5000']);
    expect(urls('localhost:5000', {})).toEqual(['http://localhost:5000']);
    expect(urls('localhost', {})).toEqual(['http://localhost']);
    expect(urls('[::1]:5000', {})).toEqual(['http://[::1]:5000']);
    expect(urls('reg.internal', { 'reg.internal': opts({ insecure: true }) })).toEqual([
      'http://reg.internal',
    ]);
  });

  it('tries mirrors first, in order, then the upstream', () => {
    const table = {
      'docker.io': opts({
        mirrors: ['http://127.0.0.1:5000', 'https://mirror.example/cache/', 'mirror2.example:5001'],
      }),
    };
    expect(urls('docker.io', table)).toEqual([
      'http://127.0.0.1:5000',
      'https://mirror.example/cache',
      'https://mirror2.example:5001',
      'https://registry-1.docker.io',
    ]);
    const eps = endpointsFor('docker.io', lookup(table));
    expect(eps.map((e) => e.isMirror)).toEqual([true, true, true, false]);
    expect(eps.map((e) => e.host)).toEqual([
      '127.0.0.1:5000',
      'mirror.example',
      'mirror2.example:5001',
      'registry-1.docker.io',
    ]);
    expect(eps.every((e) => e.registry === 'docker.io')).toBe(true);
  });

  it('strips a trailing /v2 from a mirror URL (requests add it)', () => {
    expect(
      urls('docker.io', {
        'docker.io': opts({ mirrors: ['https://m.example/v2/'], fallbackToUpstream: false }),
      }),
    ).toEqual(['https://m.example']);
  });

  it('never lists the upstream when fallback is off', () => {
    const table = {
      'registry.k8s.io': opts({ mirrors: ['http://127.0.0.1:5000'], fallbackToUpstream: false }),
    };
    expect(urls('registry.k8s.io', table)).toEqual(['http://127.0.0.1:5000']);
  });

  it('refuses a configuration that leaves no endpoint, naming the registry and the key', () => {
    let err: unknown;
    try {
      endpointsFor('registry.k8s.io', lookup({ 'registry.k8s.io': opts({ fallbackToUpstream: false }) }));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SkiffError);
    expect((err as SkiffError).kind).toBe('invalid-argument');
    expect((err as SkiffError).message).toBe(
      'no endpoint for registry "registry.k8s.io": [registries."registry.k8s.io"] has no mirrors and ' +
        'fallback_to_upstream = false; add a mirror or set fallback_to_upstream = true',
    );
  });

  it.each([
    ['ftp://m.example', /must be an http:\/\/ or https:\/\/ URL/],
    ['http://user:pw@m.example', /must not carry credentials/],
    ['http://', /invalid URL/],
  ])('refuses the mirror %j', (mirror, why) => {
    expect(() => endpointsFor('docker.io', lookup({ 'docker.io': opts({ mirrors: [mirror] }) }))).toThrow(
      why,
    );
  });

  it('takes TLS and credentials from each endpoint host entry; a mirror inherits only TLS', () => {
    const table = {
      'docker.io': opts({
        mirrors: ['https://m1.example', 'https://m2.example'],
        caFile: '/ca.pem',
        username: 'hub',
      }),
      'm2.example': opts({ skipVerify: true, username: 'mirror-user', password: 'x' }),
    };
    const [m1, m2, up] = endpointsFor('docker.io', lookup(table));
    expect(m1).toMatchObject({ tls: { caFile: '/ca.pem', skipVerify: false }, credentialsKey: undefined });
    expect(m2).toMatchObject({ tls: { caFile: '', skipVerify: true }, credentialsKey: 'm2.example' });
    expect(up).toMatchObject({ tls: { caFile: '/ca.pem', skipVerify: false }, credentialsKey: 'docker.io' });
  });

  it('keeps no secrets in an endpoint', () => {
    const table = {
      'r.example': opts({ username: 'u', password: 'hunter2', auth: 'c2VjcmV0', identityToken: 'idtok' }),
    };
    const text = JSON.stringify(endpointsFor('r.example', lookup(table)));
    for (const secret of ['hunter2', 'c2VjcmV0', 'idtok']) expect(text).not.toContain(secret);
  });
});

describe('isLoopbackHost', () => {
  it.each([
    ['localhost', true],
    ['127.0.0.1', true],
    ['127.1.2.3', true],
    ['::1', true],
    ['[::1]', true],
    ['10.0.0.1', false],
    ['docker.io', false],
    ['localhost.example.com', false],
  ])('%s → %s', (host, expected) => {
    expect(isLoopbackHost(host)).toBe(expected);
  });
});
