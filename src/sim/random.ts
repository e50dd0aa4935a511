// A small seeded PRNG (xorshift128+ on two 32-bit lanes via splitmix seeding) so every
// simulated fault schedule replays exactly from its seed. Never Math.random in sim/.

export class Random {
  private state0: number;
  private state1: number;

  constructor(seed: number) {
    this.state0 = Random.splitmix(seed >>> 0) | 1;
    this.state1 = Random.splitmix((seed >>> 0) ^ 0x9e3779b9) | 1;
  }

  private static splitmix(value: number): number {
    let z = (value + 0x9e3779b9) >>> 0;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  }

  // Uniform 32-bit unsigned integer.
  next(): number {
    let s1 = this.state0;
    const s0 = this.state1;
    this.state0 = s0;
    s1 ^= s1 << 23;
    s1 ^= s1 >>> 17;
    s1 ^= s0;
    s1 ^= s0 >>> 26;
    this.state1 = s1 >>> 0;
    return (this.state0 + this.state1) >>> 0;
  }

  // Uniform integer in [0, bound).
  below(bound: number): number {
    return Math.floor((this.next() / 0x1_0000_0000) * bound);
  }

  chance(probability: number): boolean {
    return this.next() / 0x1_0000_0000 < probability;
  }

  fill(target: Buffer): Buffer {
    for (let index = 0; index < target.length; index += 4) {
      const value = this.next();
      for (let byte = 0; byte < 4 && index + byte < target.length; byte++) target[index + byte] = (value >>> (byte * 8)) & 0xff;
    }
    return target;
  }
}
