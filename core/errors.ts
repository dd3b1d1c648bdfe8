/**
 * A user-facing error: bad input, impossible config, unreadable file. The CLI prints
 * `message` as one line and exits non-zero; the daemon turns it into a typed error reply.
 * Anything else that is thrown is a bug and keeps its stack trace.
 */
export class InvarxError extends Error {
  constructor(
    /** Stable machine-readable kind, e.g. "bad-model", "bad-config", "bad-tokens". */
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'InvarxError';
  }
}

export function fail(code: string, message: string): never {
  throw new InvarxError(code, message);
}
