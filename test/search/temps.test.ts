import { describe, expect, it } from 'vitest';
import { temp32, temp64, tempCopy } from '../../search/temps';

describe('reused temporaries', () => {
  it('gives the same memory back under one name, and distinct memory under two', () => {
    const a = temp32('t.a', 100);
    a.fill(7);
    const again = temp32('t.a', 100);
    expect(again.buffer).toBe(a.buffer);
    expect(again[99]).toBe(7); // contents are left over: takers overwrite
    const b = temp32('t.b', 100);
    expect(b.buffer).not.toBe(a.buffer);
  });

  it('has exactly the length asked for, growing when a longer one is asked for', () => {
    const big = temp64('t.c', 50);
    const small = temp64('t.c', 20);
    expect(small.length).toBe(20);
    expect(small.buffer).toBe(big.buffer);
    const bigger = temp64('t.c', 80);
    expect(bigger.length).toBe(80);
    expect(temp64('t.c', 80).buffer).toBe(bigger.buffer);
  });

  it('does not keep large arrays', () => {
    const n = (16 << 20) / 4;
    const a = temp32('t.large', n);
    expect(a.length).toBe(n);
    expect(temp32('t.large', n).buffer).not.toBe(a.buffer);
  });

  it('copies', () => {
    const src = Float64Array.from([1, 2, 3]);
    const c = tempCopy('t.copy', src);
    expect(c).toBeInstanceOf(Float64Array);
    expect(Array.from(c)).toEqual([1, 2, 3]);
    expect(c.buffer).not.toBe(src.buffer);
  });
});
