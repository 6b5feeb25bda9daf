// Scoped tensor lifetimes (the idea of TF.js's tidy, extended to async code). A scope owns every
// tensor created while it is the engine's current scope; when its function returns or throws it
// disposes them all, except the tensors it returns (found in any nesting of arrays and plain
// objects), which move to the parent scope, and tensors passed to keep().
//
// "Current scope" is a stack on the engine that is only ever pushed and popped within one
// synchronous stretch of code. JavaScript gives no hook for resuming after an await (neither in
// browsers nor, portably, in Node), so a scope cannot stay current across an await without other
// code running in it and stealing its tensors. Hence: an async scope function is current only for
// its synchronous start; after its first await it runs synchronous sections in it with
// `s.run(() => ...)` and opens child scopes with `s.scope(...)`. Two generations in flight each hold
// their own Scope object, so neither can claim the other's tensors.
import type { Tensor } from './tensor.js';

export interface ScopeHost {
  /** @internal */ readonly scopeStack: Scope[];
}

/** One level of tensor ownership: made by engine.scope() or scope.scope(). */
export class Scope {
  private owned: Tensor[] = [];
  private closed = false;

  /** @internal use engine.scope() */
  constructor(
    private readonly host: ScopeHost,
    readonly parent: Scope | null,
  ) {}

  get isOpen(): boolean {
    return !this.closed;
  }

  /** @internal called for every new tensor while this scope is current */
  adopt(t: Tensor): void {
    if (this.closed) return; // an async child finishing after its parent: the caller owns the result
    t.owner = this;
    this.owned.push(t);
  }

  /** Runs synchronous code with this scope current: the tensors it creates belong to this scope. */
  run<T>(fn: () => T): T {
    if (this.closed) throw new Error('Scope.run: the scope has already closed');
    const stack = this.host.scopeStack;
    stack.push(this);
    let r: T;
    try {
      r = fn();
    } finally {
      popScope(stack, this);
    }
    if (isThenable(r)) throw new TypeError('Scope.run takes a synchronous function; use scope.scope(async (s) => ...) for async work');
    return r;
  }

  /** A child scope whose returned tensors come back to this one (sync or async fn). */
  scope<T>(fn: (s: Scope) => T): T {
    return openScope(this.host, this, fn);
  }

  /** Takes a tensor made elsewhere (e.g. with no scope current) into this scope. */
  track<T extends Tensor>(t: T): T {
    if (t.owner !== this) {
      t.owner?.release(t);
      this.adopt(t);
    }
    return t;
  }

  /** @internal forget t (kept, or moved to another scope) */
  release(t: Tensor): void {
    if (t.owner === this) t.owner = null;
  }

  /** @internal disposes what this scope owns except `result`'s tensors, which go to the parent */
  close(result: unknown): void {
    if (this.closed) return;
    this.closed = true;
    const returned = new Set<Tensor>();
    collectTensors(result, returned, 0);
    const parent = this.parent && this.parent.isOpen ? this.parent : null;
    for (const t of this.owned) {
      if (t.owner !== this) continue; // kept, or moved to another scope
      if (t.disposed) {
        t.owner = null;
      } else if (returned.has(t)) {
        t.owner = null;
        parent?.adopt(t);
      } else {
        t.owner = null;
        t.dispose();
      }
    }
    this.owned = [];
  }
}

/** @internal engine.scope() and Scope.scope() */
export function openScope<T>(host: ScopeHost, parent: Scope | null, fn: (s: Scope) => T): T {
  if (parent && !parent.isOpen) throw new Error('scope: the parent scope has already closed');
  const s = new Scope(host, parent);
  const stack = host.scopeStack;
  stack.push(s);
  let r: T;
  try {
    r = fn(s);
  } catch (e) {
    popScope(stack, s);
    s.close(undefined);
    throw e;
  }
  popScope(stack, s);
  if (isThenable(r)) {
    return (r as unknown as Promise<unknown>).then(
      (v) => {
        s.close(v);
        return v;
      },
      (e) => {
        s.close(undefined);
        throw e;
      },
    ) as T;
  }
  s.close(r);
  return r;
}

function popScope(stack: Scope[], s: Scope): void {
  // Pushes and pops pair up within one synchronous stretch, so s is on top; search anyway so a
  // broken invariant cannot leave a stale scope current.
  const i = stack.lastIndexOf(s);
  if (i >= 0) stack.splice(i, 1);
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as { then?: unknown }).then === 'function';
}

function collectTensors(v: unknown, out: Set<Tensor>, depth: number): void {
  if (v === null || typeof v !== 'object' || depth > 32) return;
  if ((v as { isTensor?: unknown }).isTensor === true) {
    out.add(v as Tensor);
    return;
  }
  if (Array.isArray(v)) {
    for (const x of v) collectTensors(x, out, depth + 1);
    return;
  }
  const proto = Object.getPrototypeOf(v);
  if (proto === Object.prototype || proto === null) {
    for (const x of Object.values(v)) collectTensors(x, out, depth + 1);
  }
}

/** engine.keep(t) as a function: takes t out of every scope (the caller disposes it). Schedulers use
 * it for the history they carry from step to step. */
export function keep<T extends Tensor>(t: T): T {
  t.owner?.release(t);
  return t;
}
