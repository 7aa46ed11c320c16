"""Counting what JAX lowers (traces into a new XLA program) inside a block."""

import contextlib

import jax

LOWERING = "/jax/core/compile/jaxpr_to_mlir_module_duration"
"""Recorded once per program lowered: a miss of JAX's in-memory compile caches (the
persistent disk cache, if on, is looked up only after it)."""


@contextlib.contextmanager
def lowerings():
    """``with lowerings() as seen: ...``; ``len(seen)`` is the number of programs lowered."""
    seen: list[float] = []

    def listener(event: str, secs: float, **_: object) -> None:
        if event == LOWERING:
            seen.append(secs)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
