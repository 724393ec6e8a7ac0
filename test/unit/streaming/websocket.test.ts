/** WebSocket channel framing (apimachinery wsstream/conn.go) and subprotocol negotiation. */
import { describe, expect, it } from 'vitest';
import {
  decodeChannelMessage,
  encodeChannelMessage,
  negotiateSubprotocol,
  wsPortForwardProtocols,
  wsRemoteCommandProtocols,
} from '../../../src/streaming/websocket.js';

describe('channel messages', () => {
  it('prefix binary payloads with the channel byte', () => {
    expect(encodeChannelMessage('binary', 1, Buffer.from('foo\n'))).toEqual(
      Buffer.from([1, 102, 111, 111, 10]),
    );
    expect(encodeChannelMessage('binary', 3, Buffer.alloc(0))).toEqual(Buffer.from([3]));
    expect(decodeChannelMessage('binary', Buffer.from([0, 102, 111, 111, 10]))).toEqual({
      channel: 0,
      data: Buffer.from('foo\n'),
    });
  });

  it('carry base64 payloads after the channel digit (wsstream\'s example: "foo\\n" on stdin)', () => {
    expect(encodeChannelMessage('base64', 0, Buffer.from('foo\n'))).toBe('0Zm9vCg==');
    expect(encodeChannelMessage('base64', 1, Buffer.from('\n'))).toBe('1Cg==');
    expect(decodeChannelMessage('base64', Buffer.from('0Zm9vCg=='))).toEqual({
      channel: 0,
      data: Buffer.from('foo\n'),
    });
  });

  it('round-trip every channel and byte value', () => {
    const data = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    for (const codec of ['binary', 'base64'] as const) {
      for (const channel of [0, 1, 2, 3, 4, 9]) {
        const wire = encodeChannelMessage(codec, channel, data);
        expect(decodeChannelMessage(codec, Buffer.from(wire))).toEqual({ channel, data });
      }
    }
  });

  it('ignore empty messages', () => {
    expect(decodeChannelMessage('binary', Buffer.alloc(0))).toBeUndefined();
  });
});

describe('negotiateSubprotocol', () => {
  const remote = new Set(wsRemoteCommandProtocols.keys());
  const ports = new Set(wsPortForwardProtocols.keys());

  it("takes the client's first supported protocol", () => {
    expect(negotiateSubprotocol(['v5.channel.k8s.io', 'v4.channel.k8s.io'], remote)).toBe(
      'v5.channel.k8s.io',
    );
    expect(negotiateSubprotocol(['v9.channel.k8s.io', 'v4.channel.k8s.io'], remote)).toBe(
      'v4.channel.k8s.io',
    );
    expect(negotiateSubprotocol(['base64.channel.k8s.io'], remote)).toBe('base64.channel.k8s.io');
    expect(negotiateSubprotocol(['v2.portforward.k8s.io'], ports)).toBe('v2.portforward.k8s.io');
  });

  it('accepts a client that names none (kubelet does), and refuses one that names only unknown ones', () => {
    expect(negotiateSubprotocol([], remote)).toBe('');
    expect(negotiateSubprotocol(['v9.channel.k8s.io'], remote)).toBeUndefined();
    expect(negotiateSubprotocol(['v5.channel.k8s.io'], ports)).toBeUndefined();
  });
});
