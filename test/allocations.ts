// Buffer allocations made while a piece of code runs: tests that decoders never allocate
// what an untrusted length asks for before checking it.

// The sizes of every Buffer allocation made while `action` runs.
export function allocationSizes(action: () => void): number[] {
  const sizes: number[] = [];
  const saved = { alloc: Buffer.alloc, allocUnsafe: Buffer.allocUnsafe, allocUnsafeSlow: Buffer.allocUnsafeSlow };
  const counting = <T extends (size: number, ...rest: never[]) => Buffer>(original: T): T =>
    ((size: number, ...rest: never[]) => {
      sizes.push(size);
      return original(size, ...rest);
    }) as T;
  Buffer.alloc = counting(saved.alloc);
  Buffer.allocUnsafe = counting(saved.allocUnsafe);
  Buffer.allocUnsafeSlow = counting(saved.allocUnsafeSlow);
  try {
    action();
  } finally {
    Object.assign(Buffer, saved);
  }
  return sizes;
}
