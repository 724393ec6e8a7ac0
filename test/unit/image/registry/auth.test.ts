/**
 * WWW-Authenticate parsing (RFC 7235 §4.1), credentials (CRI AuthConfig semantics), token responses
 * (distribution token.md) and the token cache.
 */
import { describe, expect, it } from 'vitest';
import { SkiffError } from '../../../../src/errdefs.js';
import {
  TokenCache,
  basicAuthorization,
  credentialsFingerprint,
  decodeAuth,
  mergeScopes,
  parseTokenResponse,
  parseWwwAuthenticate,
  pickChallenge,
  refreshTokenForm,
  resolveCredentials,
  tokenRequestUrl,
  type Challenge,
} from '../../../../src/image/registry/auth.js';

const challenges: [string, Challenge[]][] = [
  [
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"',
    [
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.docker.io/token',
          service: 'registry.docker.io',
          scope: 'repository:library/busybox:pull',
        },
      },
    ],
  ],
  ['Basic realm="Registry Realm"', [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]],
  ['basic realm=simple', [{ scheme: 'basic', params: { realm: 'simple' } }]],
  // Case-insensitive scheme and parameter names; BWS around "=".
  ['BEARER Realm = "x" , SERVICE="y"', [{ scheme: 'bearer', params: { realm: 'x', service: 'y' } }]],
  // quoted-pair escapes, and commas inside quotes.
  [
    'Bearer realm="a\\"b\\\\c",scope="repository:a:pull,push"',
    [{ scheme: 'bearer', params: { realm: 'a"b\\c', scope: 'repository:a:pull,push' } }],
  ],
  // Several challenges in one header.
  [
    'Basic realm="r1", Bearer realm="r2",service="s"',
    [
      { scheme: 'basic', params: { realm: 'r1' } },
      { scheme: 'bearer', params: { realm: 'r2', service: 's' } },
    ],
  ],
  [
    'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"',
    [
      { scheme: 'newauth', params: { realm: 'apps', type: '1', title: 'Login to "apps"' } },
      { scheme: 'basic', params: { realm: 'simple' } },
    ],
  ],
  // token68, and bare schemes.
  [
    'Negotiate abc+/def==, Basic realm="x"',
    [
      { scheme: 'negotiate', params: {}, token68: 'abc+/def==' },
      { scheme: 'basic', params: { realm: 'x' } },
    ],
  ],
  [
    'Negotiate, Basic',
    [
      { scheme: 'negotiate', params: {} },
      { scheme: 'basic', params: {} },
    ],
  ],
  ['', []],
  ['  ,  ', []],
  // Malformed: keep what parsed before the error.
  ['Bearer realm="unterminated', [{ scheme: 'bearer', params: {} }]],
  [
    'Basic realm="a", Bearer realm="b" service="c"',
    [
      { scheme: 'basic', params: { realm: 'a' } },
      { scheme: 'bearer', params: { realm: 'b' } },
    ],
  ],
];

describe('parseWwwAuthenticate', () => {
  it.each(challenges)('parses %j', (header, expected) => {
    expect(parseWwwAuthenticate(header)).toEqual(expected);
  });

  it('prefers a Bearer challenge over Basic', () => {
    expect(pickChallenge(parseWwwAuthenticate('Basic realm="a", Bearer realm="b"'))?.scheme).toBe('bearer');
    expect(pickChallenge(parseWwwAuthenticate('Basic realm="a"'))?.scheme).toBe('basic');
    expect(pickChallenge(parseWwwAuthenticate('Negotiate'))).toBeUndefined();
  });
});

describe('credentials', () => {
  it('resolves in CRI order: registry token, username, identity token, auth', () => {
    expect(resolveCredentials(undefined)).toEqual({ kind: 'none' });
    expect(resolveCredentials({ username: '', password: '' })).toEqual({ kind: 'none' });
    expect(resolveCredentials({ registryToken: 't', username: 'u' })).toEqual({
      kind: 'registry-token',
      token: 't',
    });
    expect(resolveCredentials({ username: 'u', password: 'p', identityToken: 'i' })).toEqual({
      kind: 'basic',
      username: 'u',
      password: 'p',
    });
    expect(resolveCredentials({ identityToken: 'i', auth: 'eDp5' })).toEqual({
      kind: 'identity-token',
      username: '',
      token: 'i',
    });
    expect(resolveCredentials({ auth: Buffer.from('user:pa:ss').toString('base64') })).toEqual({
      kind: 'basic',
      username: 'user',
      password: 'pa:ss',
    });
  });

  it('refuses an undecodable auth without echoing it', () => {
    for (const auth of ['!!!secret!!!', Buffer.from('nocolon').toString('base64')]) {
      let err: unknown;
      try {
        decodeAuth(auth);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(SkiffError);
      expect((err as SkiffError).kind).toBe('invalid-argument');
      expect((err as SkiffError).message).not.toContain(auth);
    }
  });

  it('builds RFC 7617 basic credentials', () => {
    expect(basicAuthorization('Aladdin', 'open sesame')).toBe('Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==');
  });

  it('fingerprints credentials without revealing them', () => {
    const fp = credentialsFingerprint({ kind: 'basic', username: 'u', password: 'hunter2' });
    expect(fp).not.toContain('hunter2');
    expect(fp).not.toBe(credentialsFingerprint({ kind: 'basic', username: 'u', password: 'other' }));
    expect(credentialsFingerprint({ kind: 'none' })).toBe('anonymous');
  });
});

describe('token requests and responses', () => {
  it('asks with service, one scope parameter each, and the account', () => {
    const url = tokenRequestUrl(
      'https://auth.example/token?x=1',
      'reg',
      ['repository:a:pull', 'repository:b:pull'],
      'me',
    );
    expect(url.searchParams.get('x')).toBe('1');
    expect(url.searchParams.get('service')).toBe('reg');
    expect(url.searchParams.getAll('scope')).toEqual(['repository:a:pull', 'repository:b:pull']);
    expect(url.searchParams.get('account')).toBe('me');
  });

  it('builds the OAuth2 refresh-token form', () => {
    const form = refreshTokenForm('reg', ['repository:a:pull'], 'refresh-me', 'skiff');
    expect(Object.fromEntries(form)).toEqual({
      grant_type: 'refresh_token',
      service: 'reg',
      client_id: 'skiff',
      scope: 'repository:a:pull',
      refresh_token: 'refresh-me',
    });
  });

  it('merges the challenge scope with ours', () => {
    expect(mergeScopes('repository:a:pull', undefined)).toEqual(['repository:a:pull']);
    expect(mergeScopes('repository:a:pull', 'repository:a:pull repository:b:pull')).toEqual([
      'repository:a:pull',
      'repository:b:pull',
    ]);
  });

  it.each([
    ['{"token":"t1","expires_in":300}', { token: 't1', expiresIn: 300 }],
    ['{"access_token":"t2"}', { token: 't2', expiresIn: 60 }],
    ['{"token":"t3","access_token":"t3","expires_in":5}', { token: 't3', expiresIn: 60 }],
    [
      '{"access_token":"t4","refresh_token":"r","expires_in":900}',
      { token: 't4', expiresIn: 900, refreshToken: 'r' },
    ],
  ])('reads %s', (body, expected) => {
    expect(parseTokenResponse(body)).toEqual(expected);
  });

  it.each(['{}', 'not json', '{"token":""}', 'null'])('refuses %j as unauthenticated', (body) => {
    expect(() => parseTokenResponse(body)).toThrow(
      expect.objectContaining({ kind: 'unauthenticated' }) as Error,
    );
  });
});

describe('TokenCache', () => {
  it('keeps tokens per host, scope and credentials until they expire', () => {
    let now = 1_000_000;
    const cache = new TokenCache(() => now);
    cache.set('h', 's', 'fp', 'Bearer t', 60);
    expect(cache.get('h', 's', 'fp')).toBe('Bearer t');
    expect(cache.get('h', 's', 'other-creds')).toBeUndefined();
    expect(cache.get('h', 'other-scope', 'fp')).toBeUndefined();
    expect(cache.get('other-host', 's', 'fp')).toBeUndefined();
    now += 50_000;
    expect(cache.get('h', 's', 'fp')).toBe('Bearer t');
    now += 6_000; // within the renewal margin
    expect(cache.get('h', 's', 'fp')).toBeUndefined();
  });
});
