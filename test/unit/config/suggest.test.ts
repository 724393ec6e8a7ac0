import { describe, it, expect } from 'vitest';
import { closest, editDistance } from '../../../src/config/suggest.js';

describe('editDistance', () => {
  it.each([
    ['', '', 0],
    ['abc', '', 3],
    ['', 'abc', 3],
    ['address', 'address', 0],
    ['adress', 'address', 1],
    ['grcp', 'grpc', 1],
    ['kitten', 'sitting', 3],
    ['foo', 'root', 2],
  ])('%j → %j is %d', (a, b, distance) => {
    expect(editDistance(a, b)).toBe(distance);
  });
});

describe('closest', () => {
  const keys = ['address', 'max_recv_message_size', 'max_send_message_size'];
  it.each([
    ['adress', 'address'],
    ['Address', 'address'],
    ['addresss', 'address'],
    ['max-recv-message-size', 'max_recv_message_size'],
    ['maxRecvMessageSize', 'max_recv_message_size'],
    ['max_send_msg_size', 'max_send_message_size'],
  ])('%j suggests %j', (name, expected) => {
    expect(closest(name, keys)).toBe(expected);
  });

  it.each(['port', 'foo', 'a', 'xxxxxxx'])('%j suggests nothing', (name) => {
    expect(closest(name, keys)).toBeUndefined();
  });

  it('does not propose root for foo', () => {
    expect(closest('foo', ['root', 'state'])).toBeUndefined();
  });
});
