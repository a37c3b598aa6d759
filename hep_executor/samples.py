"""NanoAOD-like sample files for demos, tests and benchmarks.

:func:`make_samples` writes seeded, reproducible ROOT files whose ``Events``
TTree looks like CMS NanoAOD to uproot and to coffea's ``NanoAODSchema``:
jagged ``Muon_*``, ``Electron_*``, ``Jet_*`` (and the smaller collections
that NanoAOD cross-references) with shared ``n<Collection>`` counters,
``MET_*``, ``genWeight``, ``run``/``luminosityBlock``/``event``, trigger
and filter bits, and several hundred filler branches (``HLT_*``, ``L1_*``,
``Flag_*``, extra collection columns) so that reading TTree metadata costs
what it costs on real NanoAOD.

EFT samples carry ``EFTfitCoefficients[(n+1)(n+2)/2]`` per event. The
ordering convention, shared with :mod:`processors.eft`, is: the constant
term, the ``n`` linear terms, then the quadratic terms ``c_i c_j`` for
``i <= j`` in row-major order, e.g. for ``n = 2``
``[1, c1, c2, c1*c1, c1*c2, c2*c2]``. The event weight at a point ``c`` is
the dot product of the coefficients with that vector of terms. Each event's
coefficients come from a positive-definite matrix with ``c0 = 1``, so the
weight is positive at every Wilson-coefficient point.

The event content depends only on ``seed``, dataset name, file index,
``events_per_file``, ``block_size``, ``n_wc`` and ``extra_branches``
(file UUIDs and timestamps differ between runs). Each block of
``block_size`` events is one basket per branch.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import awkward as ak
import numpy as np
import uproot

from hep_executor.errors import ConfigError, InputError

__all__ = ["DATASETS", "SampleConfig", "load_fileset", "main", "make_samples"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Profile:
    """How a dataset's events look; see :data:`PROFILES`."""

    lepton_probs: tuple[float, ...]  # P(0, 1, 2, 3, 4 prompt leptons)
    os_fraction: float  # chance the 2nd lepton is forced opposite-sign to the 1st
    z_fraction: float  # chance the first two leptons come from a Z decay
    fake_mean: float  # mean number of non-prompt leptons
    lepton_pt_scale: float
    jet_mean: float
    b_jets: int
    met_scale: float
    gen_weight: float = 1.0
    negative_fraction: float = 0.0
    is_data: bool = False
    eft: bool = False


PROFILES: dict[str, _Profile] = {
    "ttH_EFT": _Profile((0.05, 0.25, 0.40, 0.22, 0.08), 0.3, 0.03, 0.3, 40.0, 5.0, 2, 50.0, 0.05, eft=True),
    "ttbar": _Profile((0.10, 0.45, 0.40, 0.04, 0.01), 0.9, 0.02, 0.4, 35.0, 3.5, 2, 45.0, 0.75, 0.005),
    "data": _Profile((0.10, 0.45, 0.38, 0.05, 0.02), 0.85, 0.15, 0.5, 30.0, 3.0, 1, 35.0, is_data=True),
}

DATASETS: tuple[str, ...] = tuple(PROFILES)
"""Dataset names :func:`make_samples` knows, in the order it writes them."""

DEFAULT_EVENTS_PER_FILE = 3000
DEFAULT_FILES_PER_DATASET = 2
DEFAULT_N_WC = 2
DEFAULT_EXTRA_BRANCHES = 500
DEFAULT_SEED = 20260901
DEFAULT_BLOCK_SIZE = 1000


@dataclass(frozen=True)
class SampleConfig:
    """What :func:`make_samples` writes; validated on construction.

    Parameters
    ----------
    events_per_file : int
        Entries in each file's ``Events`` tree (>= 1).
    files_per_dataset : int
        Files per dataset (>= 1).
    datasets : tuple of str
        Names from :data:`DATASETS`.
    n_wc : int
        Number of Wilson coefficients of the EFT samples (1 to 10).
    extra_branches : int
        Number of filler branches added to the core ones (>= 0).
    seed : int
        Seed of every random stream (>= 0).
    block_size : int
        Events per basket (>= 1).
    compression_level : int
        LZMA level of the baskets (1 to 9), the algorithm of CMS NanoAOD.
    """

    events_per_file: int = DEFAULT_EVENTS_PER_FILE
    files_per_dataset: int = DEFAULT_FILES_PER_DATASET
    datasets: tuple[str, ...] = DATASETS
    n_wc: int = DEFAULT_N_WC
    extra_branches: int = DEFAULT_EXTRA_BRANCHES
    seed: int = DEFAULT_SEED
    block_size: int = DEFAULT_BLOCK_SIZE
    compression_level: int = 3

    def __post_init__(self) -> None:
        checks = {
            "events_per_file": (self.events_per_file, 1, None),
            "files_per_dataset": (self.files_per_dataset, 1, None),
            "n_wc": (self.n_wc, 1, 10),
            "extra_branches": (self.extra_branches, 0, None),
            "seed": (self.seed, 0, None),
            "block_size": (self.block_size, 1, None),
            "compression_level": (self.compression_level, 1, 9),
        }
        for key, (value, low, high) in checks.items():
            if isinstance(value, bool) or not isinstance(value, int):
                msg = f"sample setting {key}={value!r} must be an integer"
                raise ConfigError(msg)
            if value < low or (high is not None and value > high):
                bounds = f">= {low}" if high is None else f"between {low} and {high}"
                msg = f"sample setting {key}={value} must be {bounds}"
                raise ConfigError(msg)
        if not isinstance(self.datasets, tuple) or not self.datasets:
            msg = f"sample setting datasets={self.datasets!r} must be a non-empty tuple of names"
            raise ConfigError(msg)
        unknown = [name for name in self.datasets if name not in PROFILES]
        if unknown:
            msg = f"unknown dataset(s) {unknown} in sample setting datasets; choose from {list(DATASETS)}"
            raise ConfigError(msg)
        if len(set(self.datasets)) != len(self.datasets):
            msg = f"sample setting datasets={self.datasets!r} names a dataset twice"
            raise ConfigError(msg)


def make_samples(
    outdir: str | os.PathLike,
    *,
    events_per_file: int = DEFAULT_EVENTS_PER_FILE,
    files_per_dataset: int = DEFAULT_FILES_PER_DATASET,
    datasets: Sequence[str] | None = None,
    n_wc: int = DEFAULT_N_WC,
    extra_branches: int = DEFAULT_EXTRA_BRANCHES,
    seed: int = DEFAULT_SEED,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> dict[str, list[str]]:
    """Write NanoAOD-like ROOT files and their ``fileset.json``.

    Parameters
    ----------
    outdir : str or os.PathLike
        Folder to write into (created if missing). Files are named
        ``<dataset>_<index>.root``; existing ones are overwritten.
    events_per_file : int
        Entries per file.
    files_per_dataset : int
        Files per dataset.
    datasets : sequence of str, optional
        Dataset names from :data:`DATASETS`; all of them by default
        (an EFT signal ``ttH_EFT``, a background ``ttbar`` and ``data``).
    n_wc : int
        Wilson coefficients of the EFT samples; their
        ``EFTfitCoefficients`` hold ``(n_wc+1)(n_wc+2)/2`` values.
    extra_branches : int
        Filler branches on top of the ~150 core ones.
    seed : int
        Seed; the same seed gives the same event content.
    block_size : int
        Events per basket; a file holds ``ceil(events_per_file / block_size)``
        baskets per branch.

    Returns
    -------
    dict of str to list of str
        ``{dataset: [absolute file paths]}``, ready for coffea's Runner.

    Raises
    ------
    ConfigError
        A setting is out of range or a dataset name is unknown.
    """
    names = DATASETS if datasets is None else tuple(datasets)
    config = SampleConfig(
        events_per_file=events_per_file,
        files_per_dataset=files_per_dataset,
        datasets=names,
        n_wc=n_wc,
        extra_branches=extra_branches,
        seed=seed,
        block_size=block_size,
    )
    outdir = os.path.abspath(os.fspath(outdir))
    os.makedirs(outdir, exist_ok=True)
    plan = _filler_plan(config.extra_branches, config.seed)
    fileset: dict[str, list[str]] = {}
    for dataset in config.datasets:
        paths = []
        for index in range(config.files_per_dataset):
            path = os.path.join(outdir, f"{dataset}_{index}.root")
            _write_file(path, dataset, index, config, plan)
            paths.append(path)
        fileset[dataset] = paths
    relative = {ds: [os.path.relpath(p, outdir) for p in paths] for ds, paths in fileset.items()}
    with open(os.path.join(outdir, "fileset.json"), "w", encoding="utf-8") as stream:
        json.dump(relative, stream, indent=2)
        stream.write("\n")
    logger.info("wrote %d files in %s", sum(len(p) for p in fileset.values()), outdir)
    return fileset


def load_fileset(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a ``fileset.json``, resolving relative paths against its folder.

    Parameters
    ----------
    path : str or os.PathLike
        The JSON file: ``{dataset: [path or URL, ...]}``.

    Returns
    -------
    dict of str to list of str
        Absolute paths; ``root://`` and other URLs are kept as they are.

    Raises
    ------
    FileMissingError
        The JSON file does not exist.
    InputError
        It is not valid JSON or not a mapping of dataset to a list of paths.
    """
    from hep_executor.errors import FileMissingError

    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as stream:
            raw = json.load(stream)
    except FileNotFoundError:
        msg = f"fileset file {path} does not exist; write one with `hep-executor make-samples --out DIR`"
        raise FileMissingError(msg, path) from None
    except json.JSONDecodeError as exc:
        msg = f"fileset file {path} is not valid JSON: {exc}"
        raise InputError(msg, path) from None
    valid = isinstance(raw, dict) and all(
        isinstance(files, list) and all(isinstance(f, str) for f in files) for files in raw.values()
    )
    if not valid:
        msg = f"fileset file {path} must map each dataset name to a list of file paths"
        raise InputError(msg, path)
    base = os.path.dirname(os.path.abspath(path))
    return {str(ds): [_resolve(f, base) for f in files] for ds, files in raw.items()}


def _resolve(name: str, base: str) -> str:
    if "://" in name or os.path.isabs(name):
        return name
    return os.path.normpath(os.path.join(base, name))


def _block_rng(seed: int, dataset: str, file_index: int, block: int) -> np.random.Generator:
    key = (zlib.crc32(dataset.encode()), file_index, block)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _write_file(path: str, dataset: str, index: int, config: SampleConfig, plan: tuple) -> None:
    profile = PROFILES[dataset]
    n_total = config.events_per_file
    with uproot.recreate(path, compression=uproot.LZMA(config.compression_level)) as out:
        tree = None
        for block, start in enumerate(range(0, n_total, config.block_size)):
            size = min(config.block_size, n_total - start)
            rng = _block_rng(config.seed, dataset, index, block)
            collections, flat = _generate(rng, profile, size, config.n_wc, index, index * n_total + start)
            _add_fillers(rng, plan, size, collections, flat)
            branches = {name: flat.pop(name) for name in ("run", "luminosityBlock", "event")}
            for name, (counts, fields) in collections.items():
                branches[name] = ak.unflatten(ak.zip(fields, depth_limit=1), counts)
            branches.update(flat)
            if tree is None:
                types = {name: _branch_type(array) for name, array in branches.items()}
                tree = out.mktree("Events", types, title="Events")
            tree.extend(branches)
    logger.debug("wrote %s (%d events of %s)", path, n_total, dataset)


def _branch_type(array):
    if isinstance(array, ak.Array):
        return array.type.content
    if array.ndim > 1:
        return (array.dtype, array.shape[1:])
    return array.dtype


# ---------------------------------------------------------------- physics


def _fp(values, bits: int = 10) -> np.ndarray:
    """Round to float32 with a ``bits``-bit mantissa, as NanoAOD stores most floats."""
    raw = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    shift = np.uint32(23 - bits)
    rounded = ((raw + (np.uint32(1) << (shift - np.uint32(1)))) >> shift) << shift
    return rounded.view(np.float32)


_COARSE = frozenset({"dxy", "dz", "sip3d", "pfRelIso03_all", "pfRelIso04_all", "deltaEtaSC", "relIso03", "mass", "msoftdrop"})


def _cast(array: np.ndarray, bits: int = 10) -> np.ndarray:
    if array.dtype.kind == "f":
        return _fp(array, bits)
    if array.dtype.kind == "i":
        return array.astype(np.int32)
    return array


def _eta(rng, size, limit, width=0.7):
    return limit * np.tanh(rng.normal(0.0, width, size))


def _phi(rng, size):
    return rng.uniform(-np.pi, np.pi, size)


def _local(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Event index and position within the event of each object."""
    evt = np.repeat(np.arange(len(counts)), counts)
    return evt, np.arange(len(evt)) - (np.cumsum(counts) - counts)[evt]


def _objects(rng, n, mean, pt0, scale, eta_max):
    counts = rng.poisson(mean, n)
    evt, _ = _local(counts)
    size = len(evt)
    return evt, {"pt": pt0 + rng.exponential(scale, size), "eta": _eta(rng, size, eta_max), "phi": _phi(rng, size)}


def _pack(n, evt, fields, sort=True, bits=10):
    """Counts and pt-ordered (within each event) flat fields of a collection.

    Floats keep a ``bits``-bit mantissa for pt, 8 bits for others, 6 for the coarse ones, as NanoAOD does.
    """
    order = np.lexsort((-fields["pt"], evt)) if sort else np.argsort(evt, kind="stable")
    precision = {k: min(bits, 6) if k in _COARSE else (bits if k == "pt" else min(bits, 8)) for k in fields}
    packed = {k: _cast(np.asarray(v)[order], precision[k]) for k, v in fields.items()}
    return np.bincount(evt, minlength=n), packed


def _idx(size):
    return np.full(size, -1, dtype=np.int32)


def _z_decays(rng, size):
    """pt, eta, phi of both leptons of ``size`` Z boson decays inside |eta| < 2.4."""
    out = np.zeros((6, size))
    todo = np.arange(size)
    while todo.size:
        k = todo.size
        mass = np.clip(91.1876 + 1.2475 * rng.standard_cauchy(k), 60.0, 120.0)
        zpt, zeta, zphi = rng.exponential(15.0, k) + 0.1, rng.normal(0.0, 1.2, k), _phi(rng, k)
        p = np.stack([zpt * np.cos(zphi), zpt * np.sin(zphi), zpt * np.sinh(zeta)])
        energy = np.sqrt((p**2).sum(axis=0) + mass**2)
        beta, gamma = p / energy, energy / mass
        cos_t, phi_s = rng.uniform(-1.0, 1.0, k), _phi(rng, k)
        sin_t = np.sqrt(1.0 - cos_t**2)
        d = 0.5 * mass * np.stack([sin_t * np.cos(phi_s), sin_t * np.sin(phi_s), cos_t])
        kin = []
        for sign in (1.0, -1.0):
            bp = sign * (beta * d).sum(axis=0)
            lab = sign * d + ((gamma - 1.0) * bp / (beta**2).sum(axis=0) + gamma * 0.5 * mass) * beta
            pt = np.hypot(lab[0], lab[1])
            kin += [pt, np.arcsinh(lab[2] / pt), np.arctan2(lab[1], lab[0])]
        ok = (np.abs(kin[1]) < 2.4) & (np.abs(kin[4]) < 2.4) & (kin[0] > 5.0) & (kin[3] > 5.0)
        out[:, todo[ok]] = np.stack(kin)[:, ok]
        todo = todo[~ok]
    return out


def _leptons(rng, prof, n, mc):
    """Muon, Electron (and GenPart for simulation) collections."""
    n_prompt = rng.choice(len(prof.lepton_probs), size=n, p=prof.lepton_probs)
    evt, local = _local(n_prompt)
    start, size = np.cumsum(n_prompt) - n_prompt, len(evt)
    is_mu = rng.random(size) < 0.5
    charge = rng.choice(np.array([-1, 1], dtype=np.int32), size)
    second = np.nonzero((local == 1) & (rng.random(size) < prof.os_fraction))[0]
    charge[second] = -charge[second - 1]
    pt = 12.0 + rng.exponential(prof.lepton_pt_scale, size)
    eta, phi = _eta(rng, size, np.where(is_mu, 2.4, 2.5)), _phi(rng, size)
    z_first = start[np.nonzero((n_prompt >= 2) & (rng.random(n) < prof.z_fraction))[0]]
    is_mu[z_first + 1], charge[z_first + 1] = is_mu[z_first], -charge[z_first]
    pt[z_first], eta[z_first], phi[z_first], pt[z_first + 1], eta[z_first + 1], phi[z_first + 1] = _z_decays(
        rng, len(z_first)
    )
    pdg = np.where(is_mu, 13, 11) * -charge
    collections = {}
    if mc:  # GenPart: the prompt leptons at generator level, in generation order
        g = {"pt": pt, "eta": eta, "phi": phi, "mass": np.where(is_mu, 0.10566, 0.000511), "pdgId": pdg}
        g.update(status=np.ones(size, np.int32), statusFlags=np.full(size, 8449, np.int32), genPartIdxMother=_idx(size))
        collections["GenPart"] = _pack(n, evt, g, sort=False, bits=8)
    pt = pt * (1.0 + rng.normal(0.0, np.where(is_mu, 0.015, 0.025), size))
    gen_idx = local.astype(np.int32)
    nf = rng.poisson(prof.fake_mean, n)
    f_evt, _ = _local(nf)
    fs = len(f_evt)
    f_mu = rng.random(fs) < 0.55
    evt, prompt = np.concatenate([evt, f_evt]), np.concatenate([np.ones(size, bool), np.zeros(fs, bool)])
    is_mu = np.concatenate([is_mu, f_mu])
    lep = {
        "pt": np.concatenate([pt, 5.0 + rng.exponential(9.0, fs)]),
        "eta": np.concatenate([eta, _eta(rng, fs, np.where(f_mu, 2.4, 2.5))]),
        "phi": np.concatenate([phi, _phi(rng, fs)]),
        "charge": np.concatenate([charge, rng.choice(np.array([-1, 1], dtype=np.int32), fs)]),
    }
    tot = len(evt)
    lep["mass"] = np.where(is_mu, 0.10566, 0.000511)
    lep["pdgId"] = (np.where(is_mu, 13, 11) * -lep["charge"]).astype(np.int32)
    iso = np.where(prompt, rng.exponential(0.03, tot), rng.exponential(0.35, tot))
    lep["dxy"] = rng.normal(0.0, np.where(prompt, 0.004, 0.03))
    lep["dz"] = rng.normal(0.0, np.where(prompt, 0.008, 0.06))
    lep["sip3d"] = np.abs(rng.normal(0.0, np.where(prompt, 1.3, 5.0)))
    lep["jetIdx"] = _idx(tot)
    if mc:
        lep["genPartIdx"] = np.concatenate([gen_idx, _idx(fs)])
    mu, el = np.nonzero(is_mu)[0], np.nonzero(~is_mu)[0]
    muon = {k: v[mu] for k, v in lep.items()}
    medium = rng.random(len(mu)) < np.where(prompt[mu], 0.97, 0.45)
    muon["mediumId"] = medium
    muon["tightId"] = medium & (rng.random(len(mu)) < np.where(prompt[mu], 0.97, 0.5))
    muon["pfRelIso04_all"] = iso[mu]
    muon["fsrPhotonIdx"] = _idx(len(mu))
    elec = {k: v[el] for k, v in lep.items()}
    elec["cutBased"] = np.where(
        prompt[el],
        rng.choice(np.arange(1, 5, dtype=np.int32), len(el), p=[0.02, 0.05, 0.13, 0.80]),
        rng.choice(np.arange(0, 5, dtype=np.int32), len(el), p=[0.35, 0.30, 0.18, 0.10, 0.07]),
    ).astype(np.int32)
    elec["mvaFall17V2Iso_WP90"] = (elec["cutBased"] >= 3) | (rng.random(len(el)) < 0.1)
    elec["pfRelIso03_all"] = iso[el]
    elec["photonIdx"] = _idx(len(el))
    collections["Muon"] = _pack(n, evt[mu], muon)
    collections["Electron"] = _pack(n, evt[el], elec)
    overlap = np.nonzero(prompt & (rng.random(tot) < 0.35))[0]
    return collections, (evt[overlap], lep["pt"][overlap], lep["eta"][overlap], lep["phi"][overlap])


def _jets(rng, prof, n, mc, overlap):
    """Jet (and GenJet) collections; ``overlap`` adds jets on top of leptons."""
    nj = rng.poisson(prof.jet_mean, n)
    evt, local = _local(nj)
    size = len(evt)
    flav = np.where(local < prof.b_jets, 5, np.where(rng.random(size) < 0.1, 4, 0)).astype(np.int32)
    gen = {"pt": np.where(flav == 5, 30.0 + rng.exponential(55.0, size), 25.0 + rng.exponential(45.0, size))}
    gen["eta"], gen["phi"] = _eta(rng, size, 4.7, 0.45), _phi(rng, size)
    gen["mass"] = gen["pt"] * rng.uniform(0.05, 0.2, size)
    collections = {}
    o_evt, o_pt, o_eta, o_phi = overlap
    k = len(o_evt)
    jet = {
        "pt": np.concatenate([gen["pt"] * np.maximum(rng.normal(1.0, 0.1, size), 0.5), o_pt * rng.uniform(1.0, 1.3, k)]),
        "eta": np.concatenate([gen["eta"], o_eta + rng.normal(0.0, 0.02, k)]),
        "phi": np.concatenate([gen["phi"], np.mod(o_phi + rng.normal(0.0, 0.02, k) + np.pi, 2 * np.pi) - np.pi]),
    }
    flav_all = np.concatenate([flav, np.zeros(k, np.int32)])
    total = size + k
    jet["mass"] = jet["pt"] * rng.uniform(0.05, 0.2, total)
    light = rng.beta(0.4, 8.0, total)
    jet["btagDeepFlavB"] = np.where(flav_all == 5, rng.beta(5.0, 1.3, total), np.where(flav_all == 4, rng.beta(1.5, 4.0, total), light))
    jet["jetId"] = rng.choice(np.array([0, 2, 6], np.int32), total, p=[0.02, 0.04, 0.94])
    jet["puId"] = rng.choice(np.array([0, 4, 6, 7], np.int32), total, p=[0.05, 0.05, 0.1, 0.8])
    for name in ("electronIdx1", "electronIdx2", "muonIdx1", "muonIdx2"):
        jet[name] = _idx(total)
    if mc:  # GenJet holds the generator-level b jets
        b = np.nonzero(flav == 5)[0]
        rank = np.empty(len(b), np.int64)
        rank[np.lexsort((-gen["pt"][b], evt[b]))] = np.arange(len(b))
        nb = np.bincount(evt[b], minlength=n)
        gen_idx = _idx(size)
        gen_idx[b] = rank - (np.cumsum(nb) - nb)[evt[b]]
        jet["genJetIdx"] = np.concatenate([gen_idx, _idx(k)])
        jet["hadronFlavour"] = flav_all
        gen["hadronFlavour"] = flav
        collections["GenJet"] = _pack(n, evt[b], {key: v[b] for key, v in gen.items()}, bits=8)
    collections["Jet"] = _pack(n, np.concatenate([evt, o_evt]), jet)
    return collections


_MINOR = (  # name, mean count, pt0, pt scale, |eta| max, index branches, simulation only
    ("Photon", 0.2, 15.0, 20.0, 2.5, ("electronIdx", "jetIdx", "genPartIdx"), False),
    ("Tau", 0.15, 20.0, 20.0, 2.3, ("jetIdx", "genPartIdx"), False),
    ("LowPtElectron", 0.1, 1.0, 3.0, 2.5, ("electronIdx", "photonIdx", "genPartIdx"), False),
    ("FsrPhoton", 0.05, 2.0, 4.0, 2.4, ("muonIdx",), False),
    ("GenJetAK8", 0.1, 150.0, 120.0, 2.5, (), True),
    ("GenVisTau", 0.1, 10.0, 15.0, 2.5, ("genPartIdxMother",), True),
)


def _minor_collections(rng, n, mc):
    """The collections NanoAOD cross-references, so that NanoAODSchema finds every index target.

    Their index branches hold -1 (no match), except FatJet's, which point to its two SubJets.
    """
    out = {}
    for name, mean, pt0, scale, eta_max, indices, sim_only in _MINOR:
        if mc or not sim_only:
            evt, fields = _objects(rng, n, mean, pt0, scale, eta_max)
            fields.update({idx: _idx(len(evt)) for idx in indices if mc or not idx.startswith("gen")})
            out[name] = _pack(n, evt, fields)
    evt, fat = _objects(rng, n, 0.1, 200.0, 120.0, 2.4)
    fat["mass"] = 30.0 + rng.exponential(60.0, len(evt))
    counts, fat = _pack(n, evt, fat)
    _, local = _local(counts)
    fat["subJetIdx1"], fat["subJetIdx2"] = (2 * local).astype(np.int32), (2 * local + 1).astype(np.int32)
    if mc:
        fat["genJetAK8Idx"] = _idx(len(local))
    share = rng.uniform(0.2, 0.8, len(local))
    sub = {"pt": np.stack([fat["pt"] * share, fat["pt"] * (1 - share)], axis=1).ravel()}
    sub["eta"] = np.repeat(fat["eta"], 2) + rng.normal(0.0, 0.2, 2 * len(local))
    sub["phi"] = np.mod(np.repeat(fat["phi"], 2) + rng.normal(0.0, 0.2, 2 * len(local)) + np.pi, 2 * np.pi) - np.pi
    sub["mass"] = sub["pt"] * rng.uniform(0.05, 0.2, 2 * len(local))
    out["FatJet"] = (counts, fat)
    out["SubJet"] = _pack(n, np.repeat(np.arange(n), 2 * counts), sub, sort=False)
    return out


def _eft_coefficients(rng, n, n_wc):
    """Per-event quadratic coefficients from positive-definite matrices with c0 = 1."""
    k = n_wc + 1
    a = rng.normal(0.0, 0.4, (n, k, k))
    matrix = a @ a.transpose(0, 2, 1) + 0.2 * np.eye(k)
    matrix /= matrix[:, :1, :1]
    rows, cols = np.triu_indices(n_wc)
    quad = matrix[:, 1 + rows, 1 + cols] * np.where(rows == cols, 1.0, 2.0)
    coeffs = np.concatenate([matrix[:, 0, :1], 2.0 * matrix[:, 0, 1:], quad], axis=1)
    return _fp(coeffs, bits=10)


def _count(n, counts, mask):
    evt, _ = _local(counts)
    return np.bincount(evt[mask], minlength=n)


def _generate(rng, prof, n, n_wc, file_index, first_event):
    """One block of ``n`` events: ``({collection: (counts, fields)}, {branch: array})``."""
    mc = not prof.is_data
    collections, overlap = _leptons(rng, prof, n, mc)
    collections.update(_jets(rng, prof, n, mc, overlap))
    collections.update(_minor_collections(rng, n, mc))
    number = first_event + np.arange(n, dtype=np.uint64)
    flat = {
        "run": np.full(n, 319000 + file_index if prof.is_data else 1, np.uint32),
        "luminosityBlock": (1 + number // 500).astype(np.uint32),
        "event": number + np.uint64(1),
    }
    jets = collections["Jet"]
    jet_evt, _ = _local(jets[0])
    ht = np.bincount(jet_evt, weights=jets[1]["pt"], minlength=n)
    flat["MET_pt"], flat["MET_phi"] = _fp(rng.rayleigh(prof.met_scale, n)), _fp(_phi(rng, n))
    flat["MET_sumEt"] = _fp(300.0 + ht + rng.exponential(200.0, n))
    if mc:
        sign = np.where(rng.random(n) < prof.negative_fraction, -1.0, 1.0)
        flat["genWeight"] = (prof.gen_weight * sign).astype(np.float32)
    if prof.eft:
        flat["EFTfitCoefficients"] = _eft_coefficients(rng, n, n_wc)
    (mc_n, mu), (el_n, el) = collections["Muon"], collections["Electron"]
    iso_mu = mu["tightId"] & (mu["pfRelIso04_all"] < 0.15)
    fired = {
        "HLT_IsoMu24": _count(n, mc_n, iso_mu & (mu["pt"] > 26)) >= 1,
        "HLT_Ele32_WPTight_Gsf": _count(n, el_n, (el["cutBased"] >= 4) & (el["pt"] > 34)) >= 1,
        "HLT_Mu17_TrkIsoVVL_Mu8_TrkIsoVVL_DZ_Mass3p8": (_count(n, mc_n, mu["pt"] > 19) >= 1)
        & (_count(n, mc_n, mu["pt"] > 10) >= 2),
        "HLT_Ele23_Ele12_CaloIdL_TrackIdL_IsoVL": (_count(n, el_n, el["pt"] > 25) >= 1)
        & (_count(n, el_n, el["pt"] > 14) >= 2),
        "HLT_Mu23_TrkIsoVVL_Ele12_CaloIdL_TrackIdL_IsoVL": (_count(n, mc_n, mu["pt"] > 25) >= 1)
        & (_count(n, el_n, el["pt"] > 14) >= 1),
    }
    for name, passed in fired.items():
        flat[name] = passed & (rng.random(n) < 0.95)
    flat["Flag_goodVertices"] = rng.random(n) < 0.999
    flat["Flag_METFilters"] = rng.random(n) < 0.995
    return collections, flat


# ---------------------------------------------------------------- fillers

_JES = (
    "AbsoluteMPFBias AbsoluteScale AbsoluteStat FlavorQCD Fragmentation PileUpDataMC PileUpPtBB PileUpPtEC1 "
    "PileUpPtRef RelativeBal RelativeFSR RelativeJEREC1 RelativePtBB RelativeSample RelativeStatFSR TimePtEta Total"
).split()
_FILLER_FIELDS = {  # real NanoAOD names first, then ``aux<N>``
    "Jet": "area btagDeepB btagDeepCvB btagDeepCvL chEmEF chHEF muEF neEmEF neHEF qgl rawFactor bRegCorr".split()
    + [f"pt_jes{s}{d}" for s in _JES for d in ("Up", "Down")],
    "Muon": "dxyErr dzErr ip3d miniPFRelIso_all mvaTTH pfRelIso03_chg ptErr segmentComp tkRelIso".split(),
    "Electron": "dr03TkSumPt dxyErr dzErr eInvMinusPInv energyErr hoe ip3d miniPFRelIso_all mvaTTH r9 sieie".split(),
    "Photon": "energyErr hoe mvaID pfRelIso03_all r9 sieie".split(),
    "Tau": "chargedIso dxy dz leadTkPtOverTauPt neutralIso puCorr rawDeepTau2017v2p1VSjet".split(),
    "FatJet": "area btagDeepB btagHbb deepTag_TvsQCD msoftdrop n2b1 tau1 tau2 tau3".split(),
    "PuppiMET": ["pt", "phi", "sumEt"] + [f"pt_jes{s}{d}" for s in _JES for d in ("Up", "Down")],
    "PV": "ndof x y z chi2 score".split(),
}
_FLAGS = (
    "HBHENoiseFilter HBHENoiseIsoFilter CSCTightHaloFilter globalSuperTightHalo2016Filter HcalStripHaloFilter "
    "EcalDeadCellTriggerPrimitiveFilter ecalBadCalibFilter BadPFMuonFilter BadPFMuonDzFilter hfNoisyHitsFilter "
    "BadChargedCandidateFilter eeBadScFilter ecalLaserCorrFilter trkPOGFilters muonBadTrackFilter"
).split()
_TRIGGER_STEMS = {
    "HLT": "IsoMu Mu Mu{}_TrkIsoVVL Ele{}_WPTight_Gsf Ele{}_CaloIdVT_GsfTrkIdT PFHT PFJet PFMET{}_PFMHT{}_IDTight "
    "DoubleEle{}_CaloIdL_MW Photon DiPFJetAve AK8PFJet TripleMu_{}_5_3 PFHT{}_SixPFJet32 DoubleMu{}_Mass8".split(),
    "L1": "SingleMu SingleMuOpen DoubleMu{}_SQ SingleEG SingleIsoEG DoubleEG_{}_10 SingleJet HTT ETM DoubleJet{}er2p5 "
    "SingleTau DoubleIsoTau{}er2p1 Mu{}_EG10".split(),
}


_JAGGED_GROUPS = ("Jet", "Muon", "Electron", "Photon", "Tau", "FatJet")
_FLAT_GROUPS = ("PuppiMET", "RawMET", "PV", "CaloMET", "TkMET", "ChsMET")  # unknown ones: pt, phi, sumEt, aux<N>
_CORE_TRIGGERS = frozenset(
    {"HLT_IsoMu24", "HLT_Ele32_WPTight_Gsf", "HLT_Mu17_TrkIsoVVL_Mu8_TrkIsoVVL_DZ_Mass3p8",
     "HLT_Ele23_Ele12_CaloIdL_TrackIdL_IsoVL", "HLT_Mu23_TrkIsoVVL_Ele12_CaloIdL_TrackIdL_IsoVL"}
)


def _trigger_names(prefix: str, count: int) -> list[str]:
    names = []
    for threshold in itertools.count(5, 5):
        for stem in _TRIGGER_STEMS[prefix]:
            name = f"{prefix}_{stem.replace('{}', str(threshold)) if '{}' in stem else f'{stem}{threshold}'}"
            if len(names) == count:
                return names
            if name not in _CORE_TRIGGERS:
                names.append(name)
    return names  # pragma: no cover - itertools.count never ends


def _columns(count: int, groups: tuple[str, ...], kind: str, rate: float) -> list[tuple]:
    used = dict.fromkeys(groups, 0)
    plan = []
    for i in range(count):
        group = groups[i % len(groups)]
        known = _FILLER_FIELDS.get(group, ["pt", "phi", "sumEt"])
        field = known[used[group]] if used[group] < len(known) else f"aux{used[group] - len(known)}"
        used[group] += 1
        plan.append((kind, group, f"{group}_{field}", rate))
    return plan


def _filler_plan(count: int, seed: int) -> tuple:
    """``count`` filler branches as ``(kind, group, name, rate)``, fixed by ``seed``.

    About 40% ``HLT_*`` and 25% ``L1_*`` bits, a few ``Flag_*``, the rest
    float columns: 10% of them in the jagged collections (each jagged branch
    pays for its entry offsets), 90% per event (MET variants, vertex); their
    values are mostly zero, so they cost metadata rather than disk.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0xF111,)))
    n_hlt, n_l1, n_flag = round(0.4 * count), round(0.25 * count), min(len(_FLAGS), round(0.03 * count))
    names = _trigger_names("HLT", n_hlt) + _trigger_names("L1", n_l1)
    plan = [("bool", None, name, 10.0 ** rng.uniform(-3.0, -0.7)) for name in names]
    plan += [("bool", None, f"Flag_{flag}", 0.999) for flag in _FLAGS[:n_flag]]
    n_jagged = (count - len(plan)) // 10
    plan += _columns(n_jagged, _JAGGED_GROUPS, "jagged", 0.01)
    plan += _columns(count - len(plan), _FLAT_GROUPS, "float", 0.02)
    return tuple(plan)


def _sparse(rng, size, rate):
    """Mostly zeros with a few coarse values: cheap to store, like many real NanoAOD columns."""
    levels = rng.integers(1, 16, size).astype(np.float32) / 16.0
    return np.where(rng.random(size) < rate, levels, np.float32(0.0))


def _add_fillers(rng, plan, n, collections, flat):
    for kind, group, name, rate in plan:
        if kind == "bool":
            flat[name] = rng.random(n) < rate
        elif kind == "float":
            flat[name] = _sparse(rng, n, rate)
        else:
            counts, fields = collections[group]
            fields[name[len(group) + 1 :]] = _sparse(rng, len(fields["pt"]), rate)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write a sample set and its ``fileset.json``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        Exit status: 0 on success, 2 on a bad setting.
    """
    parser = argparse.ArgumentParser(
        prog="hep-executor make-samples",
        description="Write NanoAOD-like ROOT files (ttH_EFT, ttbar, data) and fileset.json.",
    )
    parser.add_argument("--out", default="sample_data", help="output folder (default: %(default)s)")
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS_PER_FILE, help="events per file (default: %(default)s)")
    parser.add_argument("--files", type=int, default=DEFAULT_FILES_PER_DATASET, help="files per dataset (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default: %(default)s)")
    parser.add_argument("--n-wc", type=int, default=DEFAULT_N_WC, help="Wilson coefficients of EFT samples (default: %(default)s)")
    parser.add_argument(
        "--extra-branches", type=int, default=DEFAULT_EXTRA_BRANCHES, help="filler branches (default: %(default)s)"
    )
    parser.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE, help="events per basket (default: %(default)s)")
    parser.add_argument("--datasets", nargs="+", default=None, choices=DATASETS, help="datasets to write (default: all)")
    args = parser.parse_args(argv)
    try:
        fileset = make_samples(
            args.out,
            events_per_file=args.events,
            files_per_dataset=args.files,
            datasets=args.datasets,
            n_wc=args.n_wc,
            extra_branches=args.extra_branches,
            seed=args.seed,
            block_size=args.block_size,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for dataset, paths in fileset.items():
        for path in paths:
            print(f"{dataset:10s} {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    print(f"fileset: {os.path.join(os.path.abspath(args.out), 'fileset.json')}")
    return 0
