/**
 * Image references normalise as docker/distribution's ParseNormalizedNamed + TagNameOnly do, and refuse
 * what its grammar refuses, with an invalid-argument error naming the reference.
 */
import { describe, expect, it } from 'vitest';
import { SkiffError } from '../../../src/errdefs.js';
import {
  digested,
  formatReference,
  manifestReferenceOf,
  nameOf,
  parseReference,
  tagged,
  type Reference,
} from '../../../src/image/reference.js';

const D = `sha256:${'a'.repeat(64)}`;
const D512 = `sha512:${'b'.repeat(128)}`;

const ok: [string, Reference][] = [
  ['busybox', { domain: 'docker.io', path: 'library/busybox', tag: 'latest', digest: undefined }],
  ['busybox:1.36', { domain: 'docker.io', path: 'library/busybox', tag: '1.36', digest: undefined }],
  ['library/busybox', { domain: 'docker.io', path: 'library/busybox', tag: 'latest', digest: undefined }],
  ['docker.io/busybox', { domain: 'docker.io', path: 'library/busybox', tag: 'latest', digest: undefined }],
  [
    'index.docker.io/busybox',
    { domain: 'docker.io', path: 'library/busybox', tag: 'latest', digest: undefined },
  ],
  ['user/app', { domain: 'docker.io', path: 'user/app', tag: 'latest', digest: undefined }],
  ['user/app:v1', { domain: 'docker.io', path: 'user/app', tag: 'v1', digest: undefined }],
  ['user/team/app', { domain: 'docker.io', path: 'user/team/app', tag: 'latest', digest: undefined }],
  ['registry.k8s.io/pause:3.9', { domain: 'registry.k8s.io', path: 'pause', tag: '3.9', digest: undefined }],
  ['127.0.0.1:5000/x/y:t', { domain: '127.0.0.1:5000', path: 'x/y', tag: 't', digest: undefined }],
  ['localhost/x', { domain: 'localhost', path: 'x', tag: 'latest', digest: undefined }],
  ['localhost:5000/x', { domain: 'localhost:5000', path: 'x', tag: 'latest', digest: undefined }],
  ['[::1]:5000/x:v', { domain: '[::1]:5000', path: 'x', tag: 'v', digest: undefined }],
  ['Example.COM/app', { domain: 'Example.COM', path: 'app', tag: 'latest', digest: undefined }],
  // A single component with a ':' is an official image with a tag, as Docker reads it.
  ['localhost:5000', { domain: 'docker.io', path: 'library/localhost', tag: '5000', digest: undefined }],
  [`busybox@${D}`, { domain: 'docker.io', path: 'library/busybox', tag: undefined, digest: D }],
  [`busybox:1.36@${D}`, { domain: 'docker.io', path: 'library/busybox', tag: '1.36', digest: D }],
  [`host:5000/a@${D512}`, { domain: 'host:5000', path: 'a', tag: undefined, digest: D512 }],
  [
    'a/b_c.d-e__f---g:T_1.2-x',
    { domain: 'docker.io', path: 'a/b_c.d-e__f---g', tag: 'T_1.2-x', digest: undefined },
  ],
];

const bad: [string, RegExp][] = [
  ['', /at least one component/],
  [' busybox', /whitespace/],
  ['Busybox', /must be lowercase/],
  ['user/App', /must be lowercase/],
  ['registry.k8s.io/Pause', /must be lowercase/],
  ['busybox:', /invalid tag/],
  ['busybox:-x', /invalid tag/],
  [`busybox:${'t'.repeat(129)}`, /invalid tag/],
  ['busybox@sha256:abc', /sha256 needs 64/],
  [`busybox@sha256:${'A'.repeat(64)}`, /lowercase hex/],
  [`busybox@md5:${'a'.repeat(32)}`, /unsupported algorithm/],
  ['busybox@', /invalid digest/],
  ['a'.repeat(64), /64-byte hexadecimal/],
  ['host:5000/', /invalid repository path/],
  ['a//b', /invalid repository path/],
  ['a/b-', /invalid repository path/],
  ['a/.b', /invalid repository path/],
  ['-host.com/a', /invalid registry domain|invalid repository path/],
  ['host.com:port/a', /invalid registry domain/],
  [':tag', /at least one component/],
  [`example.com/${'a'.repeat(250)}`, /more than 255/],
];

describe('parseReference', () => {
  it.each(ok)('normalises %s', (input, expected) => {
    expect(parseReference(input)).toEqual(expected);
  });

  it.each(bad)('refuses %j', (input, why) => {
    let err: unknown;
    try {
      parseReference(input);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SkiffError);
    const e = err as SkiffError;
    expect(e.kind).toBe('invalid-argument');
    expect(e.message.startsWith(`invalid image reference ${JSON.stringify(input)}: `)).toBe(true);
    expect(e.message).toMatch(why);
  });
});

describe('reference string forms', () => {
  it('formats names, tags and digests', () => {
    const r = parseReference('busybox');
    expect(nameOf(r)).toBe('docker.io/library/busybox');
    expect(formatReference(r)).toBe('docker.io/library/busybox:latest');
    expect(tagged(r)).toBe('docker.io/library/busybox:latest');
    expect(digested(r)).toBeUndefined();
    expect(digested(r, D)).toBe(`docker.io/library/busybox@${D}`);
    expect(manifestReferenceOf(r)).toBe('latest');
  });

  it('keeps both tag and digest, and the digest wins for resolution', () => {
    const r = parseReference(`127.0.0.1:5000/app:v1@${D}`);
    expect(formatReference(r)).toBe(`127.0.0.1:5000/app:v1@${D}`);
    expect(tagged(r)).toBe('127.0.0.1:5000/app:v1');
    expect(digested(r)).toBe(`127.0.0.1:5000/app@${D}`);
    expect(manifestReferenceOf(r)).toBe(D);
  });

  it('has no tag form for a digest-only reference', () => {
    const r = parseReference(`busybox@${D}`);
    expect(tagged(r)).toBeUndefined();
    expect(formatReference(r)).toBe(`docker.io/library/busybox@${D}`);
  });

  it('round-trips through its normalised form', () => {
    for (const [input] of ok) {
      const r = parseReference(input);
      expect(parseReference(formatReference(r))).toEqual(r);
    }
  });
});
