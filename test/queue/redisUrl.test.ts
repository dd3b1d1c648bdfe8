/** `--queue` URLs → ioredis options, and the form printed in logs (no password). */
import { describe, expect, it } from 'vitest';
import { parseQueueUrl, redact } from '../../daemon/queue/redisUrl';

describe('parseQueueUrl', () => {
  it('reads host, port, db, user and password; the display form hides the password', () => {
    const u = parseQueueUrl('redis://bob:s%40cret@10.0.0.5:6380/3');
    expect(u.target).toEqual({ host: '10.0.0.5', port: 6380, db: 3, username: 'bob', password: 's@cret' });
    expect(u.display).toBe('redis://bob:***@10.0.0.5:6380/3');
    expect(redact('AUTH s@cret failed', u.target)).toBe('AUTH *** failed');
  });

  it('defaults to port 6379 and db 0; rediss:// turns TLS on', () => {
    expect(parseQueueUrl('redis://localhost').target).toEqual({ host: 'localhost', port: 6379, db: 0 });
    const t = parseQueueUrl('rediss://:pw@cache.example:6390');
    expect(t.target).toEqual({ host: 'cache.example', port: 6390, db: 0, password: 'pw', tls: {} });
    expect(t.display).toBe('rediss://:***@cache.example:6390/0');
  });

  it('refuses other schemes, a missing host and a non-numeric db without echoing the URL', () => {
    expect(() => parseQueueUrl('http://h:1')).toThrow(/must start with redis:\/\/ or rediss:\/\//);
    expect(() => parseQueueUrl('redis://h/abc')).toThrow(/database must be a number/);
    let msg = '';
    try {
      parseQueueUrl('redis//:topsecret@h');
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/--queue must be a URL/);
    expect(msg).not.toContain('topsecret');
  });
});
