"""EFT helpers: quadratic-coefficient bookkeeping for histograms.

An EFT sample gives each event the coefficients of a quadratic in the
Wilson coefficients ``c1..cn``. The ordering convention (the same one
:mod:`hep_executor.demo._samples` writes into ``EFTfitCoefficients``) is the
constant term, the ``n`` linear terms, then the quadratic terms ``ci*cj``
for ``i <= j`` in row-major order; for ``n = 2``::

    [1, c1, c2, c1*c1, c1*c2, c2*c2]

so an event's weight at a point ``c`` is ``coefficients @ quadratic_terms(c)``.
A histogram keeps one bin per coefficient on an extra ``coefficient`` axis
(:func:`coefficient_axis`); :func:`evaluate` collapses that axis at any
Wilson-coefficient point. Samples without coefficients fill only bin 0,
the constant term, so they evaluate to the same histogram at every point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import hist
import numpy as np

from hep_executor.errors import ConfigError

__all__ = [
    "COEFFICIENT_AXIS",
    "coefficient_axis",
    "default_wc_names",
    "evaluate",
    "n_coefficients",
    "n_wc_from_coefficients",
    "quadratic_terms",
]

COEFFICIENT_AXIS = "coefficient"
"""Name of the histogram axis that holds the quadratic coefficients."""

_TOP_WCS = ("ctG", "ctp", "cpQM", "ctW", "ctZ", "cbW", "cpQ3", "cptb", "cpt", "cQl3i")


def n_coefficients(n_wc: int) -> int:
    """Number of quadratic coefficients, ``(n+1)(n+2)/2``, for ``n_wc`` Wilson coefficients.

    Parameters
    ----------
    n_wc : int
        Number of Wilson coefficients (>= 0).

    Returns
    -------
    int
    """
    if isinstance(n_wc, bool) or not isinstance(n_wc, (int, np.integer)) or n_wc < 0:
        msg = f"n_wc={n_wc!r} must be a non-negative integer"
        raise ConfigError(msg)
    return (n_wc + 1) * (n_wc + 2) // 2


def n_wc_from_coefficients(n_coef: int) -> int | None:
    """The ``n`` with ``(n+1)(n+2)/2 == n_coef``, or None if there is none.

    Parameters
    ----------
    n_coef : int
        Length of a coefficient vector.

    Returns
    -------
    int or None
    """
    n = int(round((np.sqrt(1.0 + 8.0 * n_coef) - 3.0) / 2.0))
    return n if n >= 0 and n_coefficients(n) == n_coef else None


def default_wc_names(n_wc: int) -> tuple[str, ...]:
    """Names for ``n_wc`` Wilson coefficients: top-quark operators first, then ``c<i>``.

    Parameters
    ----------
    n_wc : int

    Returns
    -------
    tuple of str
    """
    return tuple(_TOP_WCS[i] if i < len(_TOP_WCS) else f"c{i + 1}" for i in range(n_wc))


def quadratic_terms(wc_point: Sequence[float] | np.ndarray) -> np.ndarray:
    """The vector ``[1, c1..cn, c1*c1, c1*c2, ..., cn*cn]`` at a Wilson-coefficient point.

    Parameters
    ----------
    wc_point : sequence of float
        ``(c1, ..., cn)``; an empty sequence is the one-coefficient SM case.

    Returns
    -------
    numpy.ndarray
        Float64 array of length ``(n+1)(n+2)/2``.
    """
    c = np.asarray(wc_point, dtype=np.float64).ravel()
    rows, cols = np.triu_indices(len(c))
    return np.concatenate([[1.0], c, c[rows] * c[cols]])


def coefficient_axis(n_wc: int, wc_names: Sequence[str] | None = None) -> hist.axis.Integer:
    """The ``coefficient`` axis of an EFT histogram, remembering the Wilson-coefficient names.

    Parameters
    ----------
    n_wc : int
        Number of Wilson coefficients.
    wc_names : sequence of str, optional
        Their names; :func:`default_wc_names` by default.

    Returns
    -------
    hist.axis.Integer
        ``n_coefficients(n_wc)`` bins, no flow; ``axis.wc_names`` holds the names.
    """
    names = tuple(default_wc_names(n_wc) if wc_names is None else wc_names)
    if len(names) != n_wc or len(set(names)) != n_wc or not all(isinstance(x, str) and x for x in names):
        msg = f"wc_names={list(names)} must be {n_wc} distinct non-empty names, one per Wilson coefficient"
        raise ConfigError(msg)
    return hist.axis.Integer(
        0,
        n_coefficients(n_wc),
        name=COEFFICIENT_AXIS,
        label="EFT quadratic coefficient",
        underflow=False,
        overflow=False,
        __dict__={"wc_names": names},
    )


def evaluate(histogram: hist.Hist, wc_point: Mapping[str, float] | Sequence[float] | None = None) -> hist.Hist:
    """Collapse the ``coefficient`` axis of ``histogram`` at a Wilson-coefficient point.

    Parameters
    ----------
    histogram : hist.Hist
        A histogram with a ``coefficient`` axis (see :func:`coefficient_axis`).
    wc_point : mapping of str to float, or sequence of float, optional
        Either ``{name: value}`` (names not given are 0) or the values in
        axis order. None, or all zeros, is the Standard Model point.

    Returns
    -------
    hist.Hist
        The other axes, Double storage, holding the predicted yields.

    Raises
    ------
    ConfigError
        No ``coefficient`` axis, an unknown name, or a point of the wrong length.
    """
    names = [axis.name for axis in histogram.axes]
    if COEFFICIENT_AXIS not in names:
        msg = f"histogram with axes {names} has no {COEFFICIENT_AXIS!r} axis to evaluate"
        raise ConfigError(msg)
    position = names.index(COEFFICIENT_AXIS)
    axis = histogram.axes[position]
    wc_names = tuple(getattr(axis, "wc_names", ()))
    n_wc = n_wc_from_coefficients(len(axis))
    if n_wc is None:
        msg = f"{COEFFICIENT_AXIS!r} axis has {len(axis)} bins, not (n+1)(n+2)/2 for any n"
        raise ConfigError(msg)
    if wc_point is None:
        point = np.zeros(n_wc)
    elif isinstance(wc_point, Mapping):
        unknown = sorted(set(wc_point) - set(wc_names))
        if unknown:
            msg = f"unknown Wilson coefficient(s) {unknown}; this histogram knows {list(wc_names)}"
            raise ConfigError(msg)
        point = np.array([float(wc_point.get(name, 0.0)) for name in wc_names])
    else:
        point = np.asarray(wc_point, dtype=np.float64).ravel()
    if len(point) != n_wc:
        msg = f"Wilson-coefficient point {list(point)} has {len(point)} values; this histogram needs {n_wc}"
        raise ConfigError(msg)
    values = np.tensordot(histogram.values(flow=True), quadratic_terms(point), axes=([position], [0]))
    others = [a for i, a in enumerate(histogram.axes) if i != position]
    out = hist.Hist(*others, storage=hist.storage.Double(), name=histogram.name, label=histogram.label)
    out.view(flow=True)[...] = values
    return out
