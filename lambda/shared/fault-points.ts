/**
 * Named steps inside the handlers where the local runtime can kill an invocation (`--faults crash=HANDLER@STEP:N`).
 * Deployed functions never install the hook, so {@link faultPoint} does nothing there.
 */

/** Hook the local runtime installs in a function's execution environment. */
type FaultHook = (handler: string, step: string) => void;

/** Marks a step of a handler where a local fault may kill the invocation. */
export function faultPoint(handler: string, step: string): void {
  const hook = (globalThis as { __corpusFaultPoint?: FaultHook }).__corpusFaultPoint;
  if (hook) hook(handler, step);
}
