"""Reading jaxprs in tests: every equation, those of nested jaxprs included."""

from __future__ import annotations

from collections.abc import Iterator

from jax.extend.core import jaxprs_in_params


def all_eqns(jaxpr) -> Iterator:
    """Every equation of ``jaxpr`` and of the jaxprs nested in it (scan and cond bodies,
    custom_jvp calls, pjit...), depth first."""
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jaxprs_in_params(eqn.params):
            yield from all_eqns(sub)
