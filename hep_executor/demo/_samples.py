"""NanoAOD-like sample files for demos, tests and benchmarks.

:func:`make_samples` writes seeded ROOT files whose ``Events`` TTree looks
like CMS NanoAOD to uproot and to coffea's ``NanoAODSchema``: jagged
``Muon_*``, ``Electron_*``, ``Jet_*`` with shared ``nMuon``/``nElectron``/
``nJet`` counters, the smaller collections NanoAOD cross-references (so the
schema finds every index target and warns about nothing), ``MET_*``,
``genWeight`` (simulation only), ``run``/``luminosityBlock``/``event``,
trigger and filter bits, and several hundred filler branches (``HLT_*``,
``L1_*``, ``Flag_*``, extra float columns) so that reading the TTree
metadata costs what it costs on real NanoAOD. Baskets are LZMA-compressed
and floats keep NanoAOD-like reduced mantissas.

EFT samples carry ``EFTfitCoefficients[(n+1)(n+2)/2]`` per event. The
ordering convention, shared with :mod:`processors.eft`: the constant term,
the ``n`` linear terms, then the quadratic terms ``c_i c_j`` for ``i <= j``
in row-major order; for ``n = 2``: ``[1, c1, c2, c1*c1, c1*c2, c2*c2]``.
An event's weight at a point ``c`` is the dot product of its coefficients
with that vector. The coefficients come from a positive-definite matrix
with ``c0 = 1``, so the weight is positive at every point.

Event content depends only on the seed, dataset, file index,
``events_per_file``, ``block_size``, ``n_wc`` and ``extra_branches``
(file UUIDs and timestamps differ). Each block of ``block_size`` events
is one basket of every branch.
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

from hep_executor.errors import ConfigError, FileMissingError, InputError

__all__ = ["DATASETS", "SampleConfig", "load_fileset", "main", "make_samples"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Profile:
    """How one dataset's events look."""

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


_PROFILES = {
    "ttH_EFT": _Profile((0.05, 0.25, 0.40, 0.22, 0.08), 0.3, 0.03, 0.3, 40.0, 5.0, 2, 50.0, 0.05, eft=True),
    "ttbar": _Profile((0.10, 0.45, 0.40, 0.04, 0.01), 0.9, 0.02, 0.4, 35.0, 3.5, 2, 45.0, 0.75, 0.005),
    "data": _Profile((0.10, 0.45, 0.38, 0.05, 0.02), 0.85, 0.15, 0.5, 30.0, 3.0, 1, 35.0, is_data=True),
}

DATASETS: tuple[str, ...] = tuple(_PROFILES)
"""Dataset names :func:`make_samples` knows: an EFT signal, a background and data."""

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
        Names from :data:`DATASETS`, each at most once.
    n_wc : int
        Wilson coefficients of the EFT samples (1 to 10).
    extra_branches : int
        Filler branches on top of the ~125 core ones (>= 0).
    seed : int
        Seed of every random stream (>= 0).
    block_size : int
        Events per basket (>= 1).
    compression_level : int
        LZMA level of the baskets (1 to 9).
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
        bounds = {
            "events_per_file": (1, None),
            "files_per_dataset": (1, None),
            "n_wc": (1, 10),
            "extra_branches": (0, None),
            "seed": (0, None),
            "block_size": (1, None),
            "compression_level": (1, 9),
        }
        for key, (low, high) in bounds.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                msg = f"sample setting {key}={value!r} must be an integer"
                raise ConfigError(msg)
            if value < low or (high is not None and value > high):
                wanted = f">= {low}" if high is None else f"between {low} and {high}"
                msg = f"sample setting {key}={value} must be {wanted}"
                raise ConfigError(msg)
        if not isinstance(self.datasets, tuple) or not self.datasets:
            msg = f"sample setting datasets={self.datasets!r} must be a non-empty tuple of names"
            raise ConfigError(msg)
        unknown = [name for name in self.datasets if name not in _PROFILES]
        if unknown or len(set(self.datasets)) != len(self.datasets):
            msg = f"sample setting datasets={list(self.datasets)} must name each of {list(DATASETS)} at most once"
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
    """Write NanoAOD-like ROOT files ``<dataset>_<index>.root`` and ``fileset.json``.

    Parameters
    ----------
    outdir : str or os.PathLike
        Folder to write into; created if missing, same-named files overwritten.
    events_per_file, files_per_dataset, n_wc, extra_branches, seed, block_size : int
        As in :class:`SampleConfig`.
    datasets : sequence of str, optional
        Names from :data:`DATASETS`; all of them by default.

    Returns
    -------
    dict of str to list of str
        ``{dataset: [absolute paths]}``, ready for coffea's ``Runner``. The
        ``fileset.json`` written next to the files holds the same mapping
        with paths relative to ``outdir`` (read it with :func:`load_fileset`).

    Raises
    ------
    ConfigError
        A setting is out of range or a dataset name unknown.
    """
    config = SampleConfig(
        events_per_file=events_per_file,
        files_per_dataset=files_per_dataset,
        datasets=DATASETS if datasets is None else tuple(datasets),
        n_wc=n_wc,
        extra_branches=extra_branches,
        seed=seed,
        block_size=block_size,
    )
    outdir = os.path.abspath(os.fspath(outdir))
    os.makedirs(outdir, exist_ok=True)
    plan = _filler_plan(config.extra_branches, config.seed)
    fileset = {
        dataset: [os.path.join(outdir, f"{dataset}_{index}.root") for index in range(config.files_per_dataset)]
        for dataset in config.datasets
    }
    for dataset, paths in fileset.items():
        for index, path in enumerate(paths):
            _write_file(path, dataset, index, config, plan)
    relative = {dataset: [os.path.basename(p) for p in paths] for dataset, paths in fileset.items()}
    with open(os.path.join(outdir, "fileset.json"), "w", encoding="utf-8") as stream:
        json.dump(relative, stream, indent=2)
        stream.write("\n")
    logger.info("wrote %d sample files in %s", sum(map(len, fileset.values())), outdir)
    return fileset


def load_fileset(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a ``fileset.json``, resolving relative paths against its folder.

    Parameters
    ----------
    path : str or os.PathLike
        A JSON file mapping each dataset name to a list of paths or URLs.

    Returns
    -------
    dict of str to list of str
        The fileset with absolute paths; URLs (``root://...``) are kept as is.

    Raises
    ------
    FileMissingError
        The JSON file does not exist.
    InputError
        It is not valid JSON, or not a mapping of names to lists of strings.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as stream:
            raw = json.load(stream)
    except FileNotFoundError:
        msg = f"fileset file {path} does not exist; write one with `hep-executor make-samples --out DIR`"
        raise FileMissingError(msg, path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        msg = f"fileset file {path} is not valid JSON ({exc}); expected {{dataset: [paths]}}"
        raise InputError(msg, path) from None
    if not isinstance(raw, dict) or not all(
        isinstance(files, list) and all(isinstance(f, str) for f in files) for files in raw.values()
    ):
        msg = f"fileset file {path} must map each dataset name to a list of file paths"
        raise InputError(msg, path)
    base = os.path.dirname(os.path.abspath(path))
    return {
        dataset: [f if "://" in f else os.path.normpath(os.path.join(base, f)) for f in files]
        for dataset, files in raw.items()
    }


def _write_file(path: str, dataset: str, index: int, config: SampleConfig, plan: tuple) -> None:
    profile, n_total = _PROFILES[dataset], config.events_per_file
    with uproot.recreate(path, compression=uproot.LZMA(config.compression_level)) as out:
        tree = None
        for block, start in enumerate(range(0, n_total, config.block_size)):
            size = min(config.block_size, n_total - start)
            key = (zlib.crc32(dataset.encode()), index, block)
            rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=key))
            collections, flat = _generate(rng, profile, size, config.n_wc, index, index * n_total + start)
            _add_fillers(rng, plan, size, collections, flat)
            branches = {name: flat.pop(name) for name in ("run", "luminosityBlock", "event")}
            for name, (counts, fields) in collections.items():
                branches[name] = ak.unflatten(ak.zip(fields, depth_limit=1), counts)
            branches.update(flat)
            if tree is None:
                tree = out.mktree("Events", {name: _branch_type(a) for name, a in branches.items()}, title="Events")
            tree.extend(branches)
    logger.debug("wrote %s: %d events of %s", path, n_total, dataset)


def _branch_type(array):
    if isinstance(array, ak.Array):
        return array.type.content
    return (array.dtype, array.shape[1:]) if array.ndim > 1 else array.dtype


# --------------------------------------------------------------------- physics

_COARSE = frozenset({"dxy", "dz", "sip3d", "pfRelIso03_all", "pfRelIso04_all", "mass"})
_MUON_MASS, _ELECTRON_MASS = 0.10566, 0.000511


def _fp(values, bits: int) -> np.ndarray:
    """Round to float32 keeping ``bits`` bits of mantissa, as NanoAOD stores floats."""
    raw = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    shift = np.uint32(23 - bits)
    return (((raw + (np.uint32(1) << (shift - np.uint32(1)))) >> shift) << shift).view(np.float32)


def _pack(n, evt, fields, sort=True, bits=10):
    """``(counts, fields)`` of a collection, pt-ordered within each event.

    Floats keep ``bits`` mantissa bits for pt, at most 8 for the others and
    6 for the coarse ones; integers become int32.
    """
    order = np.lexsort((-fields["pt"], evt)) if sort else np.argsort(evt, kind="stable")
    packed = {}
    for name, values in fields.items():
        values = np.asarray(values)[order]
        if values.dtype.kind == "f":
            values = _fp(values, min(bits, 6) if name in _COARSE else bits if name == "pt" else min(bits, 8))
        elif values.dtype.kind == "i":
            values = values.astype(np.int32)
        packed[name] = values
    return np.bincount(evt, minlength=n), packed


def _local(counts):
    """Event index and position within its event of each object."""
    evt = np.repeat(np.arange(len(counts)), counts)
    return evt, np.arange(len(evt)) - (np.cumsum(counts) - counts)[evt]


def _eta(rng, size, limit, width=0.7):
    return limit * np.tanh(rng.normal(0.0, width, size))


def _phi(rng, size):
    return rng.uniform(-np.pi, np.pi, size)


def _wrap(phi):
    return np.mod(phi + np.pi, 2 * np.pi) - np.pi


def _idx(size):
    return np.full(size, -1, dtype=np.int32)


def _objects(rng, n, mean, pt0, scale, eta_max):
    evt, _ = _local(rng.poisson(mean, n))
    size = len(evt)
    return evt, {"pt": pt0 + rng.exponential(scale, size), "eta": _eta(rng, size, eta_max), "phi": _phi(rng, size)}


def _z_decays(rng, size):
    """pt, eta, phi of both leptons of ``size`` Z decays, both inside |eta| < 2.4."""
    out, todo = np.zeros((6, size)), np.arange(size)
    while todo.size:
        k = todo.size
        mass = np.clip(91.1876 + 1.2475 * rng.standard_cauchy(k), 60.0, 120.0)
        zpt, zeta, zphi = 0.1 + rng.exponential(15.0, k), rng.normal(0.0, 1.2, k), _phi(rng, k)
        p = np.stack([zpt * np.cos(zphi), zpt * np.sin(zphi), zpt * np.sinh(zeta)])
        energy = np.sqrt((p**2).sum(axis=0) + mass**2)
        beta, gamma = p / energy, energy / mass
        cos_t, phi_s = rng.uniform(-1.0, 1.0, k), _phi(rng, k)
        sin_t = np.sqrt(1.0 - cos_t**2)
        d = 0.5 * mass * np.stack([sin_t * np.cos(phi_s), sin_t * np.sin(phi_s), cos_t])
        kin = []
        for sign in (1.0, -1.0):  # boost each massless lepton from the Z rest frame
            bp = sign * (beta * d).sum(axis=0)
            lab = sign * d + ((gamma - 1.0) * bp / (beta**2).sum(axis=0) + gamma * 0.5 * mass) * beta
            pt = np.hypot(lab[0], lab[1])
            kin += [pt, np.arcsinh(lab[2] / pt), np.arctan2(lab[1], lab[0])]
        ok = (np.abs(kin[1]) < 2.4) & (np.abs(kin[4]) < 2.4) & (kin[0] > 5.0) & (kin[3] > 5.0)
        out[:, todo[ok]] = np.stack(kin)[:, ok]
        todo = todo[~ok]
    return out


def _leptons(rng, prof, n, mc):
    """Muon, Electron (and GenPart) collections, and the leptons that also make a jet."""
    n_prompt = rng.choice(len(prof.lepton_probs), size=n, p=prof.lepton_probs)
    evt, local = _local(n_prompt)
    size = len(evt)
    is_mu = rng.random(size) < 0.5
    charge = rng.choice(np.array([-1, 1], np.int32), size)
    second = np.nonzero((local == 1) & (rng.random(size) < prof.os_fraction))[0]
    charge[second] = -charge[second - 1]
    pt = 12.0 + rng.exponential(prof.lepton_pt_scale, size)
    eta, phi = _eta(rng, size, np.where(is_mu, 2.4, 2.5)), _phi(rng, size)
    z1 = (np.cumsum(n_prompt) - n_prompt)[(n_prompt >= 2) & (rng.random(n) < prof.z_fraction)]
    is_mu[z1 + 1], charge[z1 + 1] = is_mu[z1], -charge[z1]
    pt[z1], eta[z1], phi[z1], pt[z1 + 1], eta[z1 + 1], phi[z1 + 1] = _z_decays(rng, len(z1))
    collections = {}
    if mc:  # GenPart: the prompt leptons at generator level, in generation order
        gen = {"pt": pt, "eta": eta, "phi": phi, "mass": np.where(is_mu, _MUON_MASS, _ELECTRON_MASS)}
        gen.update(pdgId=np.where(is_mu, 13, 11) * -charge, status=np.ones(size, np.int32))
        gen.update(statusFlags=np.full(size, 8449, np.int32), genPartIdxMother=_idx(size))
        collections["GenPart"] = _pack(n, evt, gen, sort=False, bits=8)
    fake_evt, _ = _local(rng.poisson(prof.fake_mean, n))
    fakes = len(fake_evt)
    fake_mu = rng.random(fakes) < 0.55
    prompt = np.concatenate([np.ones(size, bool), np.zeros(fakes, bool)])
    evt, is_mu = np.concatenate([evt, fake_evt]), np.concatenate([is_mu, fake_mu])
    lep = {
        "pt": np.concatenate([pt * (1.0 + rng.normal(0.0, 0.02, size)), 5.0 + rng.exponential(9.0, fakes)]),
        "eta": np.concatenate([eta, _eta(rng, fakes, np.where(fake_mu, 2.4, 2.5))]),
        "phi": np.concatenate([phi, _phi(rng, fakes)]),
        "charge": np.concatenate([charge, rng.choice(np.array([-1, 1], np.int32), fakes)]),
    }
    total = len(evt)
    lep["mass"] = np.where(is_mu, _MUON_MASS, _ELECTRON_MASS)
    lep["pdgId"] = np.where(is_mu, 13, 11) * -lep["charge"]
    lep["dxy"] = rng.normal(0.0, np.where(prompt, 0.004, 0.03))
    lep["dz"] = rng.normal(0.0, np.where(prompt, 0.008, 0.06))
    lep["sip3d"] = np.abs(rng.normal(0.0, np.where(prompt, 1.3, 5.0)))
    lep["jetIdx"] = _idx(total)
    if mc:
        lep["genPartIdx"] = np.concatenate([local, _idx(fakes)])
    iso = np.where(prompt, rng.exponential(0.03, total), rng.exponential(0.35, total))
    mu, el = np.nonzero(is_mu)[0], np.nonzero(~is_mu)[0]
    muon = {key: values[mu] for key, values in lep.items()}
    muon["mediumId"] = rng.random(len(mu)) < np.where(prompt[mu], 0.97, 0.45)
    muon["tightId"] = muon["mediumId"] & (rng.random(len(mu)) < np.where(prompt[mu], 0.97, 0.5))
    muon.update(pfRelIso04_all=iso[mu], fsrPhotonIdx=_idx(len(mu)))
    elec = {key: values[el] for key, values in lep.items()}
    elec["cutBased"] = np.where(
        prompt[el],
        rng.choice(np.arange(1, 5), len(el), p=[0.02, 0.05, 0.13, 0.80]),
        rng.choice(np.arange(0, 5), len(el), p=[0.35, 0.30, 0.18, 0.10, 0.07]),
    )
    elec["mvaFall17V2Iso_WP90"] = (elec["cutBased"] >= 3) | (rng.random(len(el)) < 0.1)
    elec.update(pfRelIso03_all=iso[el], photonIdx=_idx(len(el)))
    collections["Muon"] = _pack(n, evt[mu], muon)
    collections["Electron"] = _pack(n, evt[el], elec)
    both = np.nonzero(prompt & (rng.random(total) < 0.35))[0]
    return collections, (evt[both], lep["pt"][both], lep["eta"][both], lep["phi"][both])


def _jets(rng, prof, n, mc, overlap):
    """Jet (and GenJet: the generator-level b jets) collections; ``overlap`` puts jets on leptons."""
    evt, local = _local(rng.poisson(prof.jet_mean, n))
    size = len(evt)
    flav = np.where(local < prof.b_jets, 5, np.where(rng.random(size) < 0.1, 4, 0))
    gen = {"pt": np.where(flav == 5, 30.0 + rng.exponential(55.0, size), 25.0 + rng.exponential(45.0, size))}
    gen.update(eta=_eta(rng, size, 4.7, 0.45), phi=_phi(rng, size), mass=gen["pt"] * rng.uniform(0.05, 0.2, size))
    o_evt, o_pt, o_eta, o_phi = overlap
    k, total = len(o_evt), size + len(o_evt)
    jet = {
        "pt": np.concatenate(
            [gen["pt"] * np.maximum(rng.normal(1.0, 0.1, size), 0.5), o_pt * rng.uniform(1.0, 1.3, k)]
        ),
        "eta": np.concatenate([gen["eta"], o_eta + rng.normal(0.0, 0.02, k)]),
        "phi": np.concatenate([gen["phi"], _wrap(o_phi + rng.normal(0.0, 0.02, k))]),
    }
    flav_all = np.concatenate([flav, np.zeros(k, flav.dtype)])
    jet["mass"] = jet["pt"] * rng.uniform(0.05, 0.2, total)
    b_like, c_like, light = rng.beta(5.0, 1.3, total), rng.beta(1.5, 4.0, total), rng.beta(0.4, 8.0, total)
    jet["btagDeepFlavB"] = np.select([flav_all == 5, flav_all == 4], [b_like, c_like], light)
    jet["jetId"] = rng.choice(np.array([0, 2, 6]), total, p=[0.02, 0.04, 0.94])
    jet["puId"] = rng.choice(np.array([0, 4, 6, 7]), total, p=[0.05, 0.05, 0.1, 0.8])
    jet.update({name: _idx(total) for name in ("electronIdx1", "electronIdx2", "muonIdx1", "muonIdx2")})
    collections = {}
    if mc:
        b = np.nonzero(flav == 5)[0]
        rank = np.empty(len(b), np.int64)
        rank[np.lexsort((-gen["pt"][b], evt[b]))] = np.arange(len(b))
        n_b = np.bincount(evt[b], minlength=n)
        gen_idx = _idx(size)
        gen_idx[b] = rank - (np.cumsum(n_b) - n_b)[evt[b]]
        jet.update(genJetIdx=np.concatenate([gen_idx, _idx(k)]), hadronFlavour=flav_all)
        gen["hadronFlavour"] = flav
        collections["GenJet"] = _pack(n, evt[b], {key: values[b] for key, values in gen.items()}, bits=8)
    collections["Jet"] = _pack(n, np.concatenate([evt, o_evt]), jet)
    return collections


_MINOR = (  # name, mean count, pt0, pt scale, |eta| max, index branches (gen*: simulation only), simulation only
    ("Photon", 0.2, 15.0, 20.0, 2.5, ("electronIdx", "jetIdx", "genPartIdx"), False),
    ("Tau", 0.15, 20.0, 20.0, 2.3, ("jetIdx", "genPartIdx"), False),
    ("LowPtElectron", 0.1, 1.0, 3.0, 2.5, ("electronIdx", "photonIdx", "genPartIdx"), False),
    ("FsrPhoton", 0.05, 2.0, 4.0, 2.4, ("muonIdx",), False),
    ("GenJetAK8", 0.1, 150.0, 120.0, 2.5, (), True),
    ("GenVisTau", 0.1, 10.0, 15.0, 2.5, ("genPartIdxMother",), True),
)


def _minor_collections(rng, n, mc):
    """The collections NanoAOD cross-references, so NanoAODSchema finds every index target.

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
    fat.update(subJetIdx1=(2 * local).astype(np.int32), subJetIdx2=(2 * local + 1).astype(np.int32))
    if mc:
        fat["genJetAK8Idx"] = _idx(len(local))
    share = rng.uniform(0.2, 0.8, len(local))
    sub = {"pt": np.stack([fat["pt"] * share, fat["pt"] * (1.0 - share)], axis=1).ravel()}
    sub["eta"] = np.repeat(fat["eta"], 2) + rng.normal(0.0, 0.2, len(sub["pt"]))
    sub["phi"] = _wrap(np.repeat(fat["phi"], 2) + rng.normal(0.0, 0.2, len(sub["pt"])))
    sub["mass"] = sub["pt"] * rng.uniform(0.05, 0.2, len(sub["pt"]))
    out["FatJet"] = (counts, fat)
    out["SubJet"] = _pack(n, np.repeat(np.arange(n), 2 * counts), sub, sort=False)
    return out


def _eft_coefficients(rng, n, n_wc):
    """Per-event coefficients of ``s^T M s``, ``s = (1, c1..cn)``, ``M`` positive definite with ``M00 = 1``."""
    a = rng.normal(0.0, 0.4, (n, n_wc + 1, n_wc + 1))
    matrix = a @ a.transpose(0, 2, 1) + 0.2 * np.eye(n_wc + 1)
    matrix /= matrix[:, :1, :1]
    rows, cols = np.triu_indices(n_wc)
    quadratic = matrix[:, 1 + rows, 1 + cols] * np.where(rows == cols, 1.0, 2.0)
    return _fp(np.concatenate([matrix[:, 0, :1], 2.0 * matrix[:, 0, 1:], quadratic], axis=1), bits=10)


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
    jet_counts, jets = collections["Jet"]
    ht = np.bincount(_local(jet_counts)[0], weights=jets["pt"], minlength=n)
    flat["MET_pt"], flat["MET_phi"] = _fp(rng.rayleigh(prof.met_scale, n), 10), _fp(_phi(rng, n), 10)
    flat["MET_sumEt"] = _fp(300.0 + ht + rng.exponential(200.0, n), 10)
    if mc:
        sign = np.where(rng.random(n) < prof.negative_fraction, -1.0, 1.0)
        flat["genWeight"] = (prof.gen_weight * sign).astype(np.float32)
    if prof.eft:
        flat["EFTfitCoefficients"] = _eft_coefficients(rng, n, n_wc)

    def count(name, mask):
        return np.bincount(_local(collections[name][0])[0][mask], minlength=n)

    mu, el = collections["Muon"][1], collections["Electron"][1]
    fired = {
        "HLT_IsoMu24": count("Muon", mu["tightId"] & (mu["pfRelIso04_all"] < 0.15) & (mu["pt"] > 26)) > 0,
        "HLT_Ele32_WPTight_Gsf": count("Electron", (el["cutBased"] >= 4) & (el["pt"] > 34)) > 0,
        "HLT_Mu17_TrkIsoVVL_Mu8_TrkIsoVVL_DZ_Mass3p8": (count("Muon", mu["pt"] > 19) > 0)
        & (count("Muon", mu["pt"] > 10) > 1),
        "HLT_Ele23_Ele12_CaloIdL_TrackIdL_IsoVL": (count("Electron", el["pt"] > 25) > 0)
        & (count("Electron", el["pt"] > 14) > 1),
        "HLT_Mu23_TrkIsoVVL_Ele12_CaloIdL_TrackIdL_IsoVL": (count("Muon", mu["pt"] > 25) > 0)
        & (count("Electron", el["pt"] > 14) > 0),
    }
    flat.update({name: passed & (rng.random(n) < 0.95) for name, passed in fired.items()})
    flat["Flag_goodVertices"] = rng.random(n) < 0.999
    flat["Flag_METFilters"] = rng.random(n) < 0.995
    return collections, flat


# --------------------------------------------------------------------- fillers

_JES = (
    "AbsoluteMPFBias AbsoluteScale AbsoluteStat FlavorQCD Fragmentation PileUpDataMC PileUpPtBB PileUpPtEC1 "
    "PileUpPtRef RelativeBal RelativeFSR RelativeJEREC1 RelativePtBB RelativeSample RelativeStatFSR TimePtEta Total"
).split()
_FILLER_FIELDS = {  # real NanoAOD names first, then aux<N>
    "Jet": "area btagDeepB btagDeepCvB btagDeepCvL chEmEF chHEF muEF neEmEF neHEF qgl rawFactor bRegCorr".split()
    + [f"pt_jes{source}{way}" for source in _JES for way in ("Up", "Down")],
    "Muon": "dxyErr dzErr ip3d miniPFRelIso_all mvaTTH pfRelIso03_chg ptErr segmentComp tkRelIso".split(),
    "Electron": "dr03TkSumPt dxyErr dzErr eInvMinusPInv energyErr hoe ip3d miniPFRelIso_all mvaTTH r9 sieie".split(),
    "Photon": "energyErr hoe mvaID pfRelIso03_all r9 sieie".split(),
    "Tau": "chargedIso dxy dz leadTkPtOverTauPt neutralIso puCorr rawDeepTau2017v2p1VSjet".split(),
    "FatJet": "area btagDeepB btagHbb deepTag_TvsQCD msoftdrop n2b1 tau1 tau2 tau3".split(),
    "PuppiMET": ["pt", "phi", "sumEt"] + [f"pt_jes{source}{way}" for source in _JES for way in ("Up", "Down")],
    "PV": "ndof x y z chi2 score".split(),
}
_JAGGED_GROUPS = ("Jet", "Muon", "Electron", "Photon", "Tau", "FatJet")
_FLAT_GROUPS = ("PuppiMET", "RawMET", "PV", "CaloMET", "TkMET", "ChsMET")
_FLAGS = (
    "HBHENoiseFilter HBHENoiseIsoFilter CSCTightHaloFilter globalSuperTightHalo2016Filter HcalStripHaloFilter "
    "EcalDeadCellTriggerPrimitiveFilter ecalBadCalibFilter BadPFMuonFilter BadPFMuonDzFilter hfNoisyHitsFilter "
    "BadChargedCandidateFilter eeBadScFilter ecalLaserCorrFilter trkPOGFilters muonBadTrackFilter"
).split()
_TRIGGER_STEMS = {
    "HLT": "IsoMu Mu Mu#_TrkIsoVVL Ele#_WPTight_Gsf Ele#_CaloIdVT_GsfTrkIdT PFHT PFJet PFMET#_PFMHT#_IDTight "
    "DoubleEle#_CaloIdL_MW Photon DiPFJetAve AK8PFJet TripleMu_#_5_3 PFHT#_SixPFJet32 DoubleMu#_Mass8".split(),
    "L1": "SingleMu SingleMuOpen DoubleMu#_SQ SingleEG SingleIsoEG DoubleEG_#_10 SingleJet HTT ETM DoubleJet#er2p5 "
    "SingleTau DoubleIsoTau#er2p1 Mu#_EG10".split(),
}


def _trigger_names(prefix: str, count: int) -> list[str]:
    """``count`` distinct trigger names; thresholds step by 5, so none is a core trigger."""
    names = (
        f"{prefix}_{stem.replace('#', str(threshold)) if '#' in stem else f'{stem}{threshold}'}"
        for threshold in itertools.count(5, 5)
        for stem in _TRIGGER_STEMS[prefix]
    )
    return list(itertools.islice(names, count))


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

    About 40% ``HLT_*`` and 25% ``L1_*`` bits (each with its own firing
    rate), a few ``Flag_*``, and float columns: a tenth of those in the jagged
    collections (each jagged branch pays for its entry offsets), the rest per
    event (MET variants, vertex). Float fillers are mostly zero, so they cost
    metadata rather than disk.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0xF111,)))
    names = _trigger_names("HLT", round(0.4 * count)) + _trigger_names("L1", round(0.25 * count))
    plan = [("bool", None, name, 10.0 ** rng.uniform(-3.0, -0.7)) for name in names]
    plan += [("bool", None, f"Flag_{flag}", 0.999) for flag in _FLAGS[: min(len(_FLAGS), round(0.03 * count))]]
    plan += _columns((count - len(plan)) // 10, _JAGGED_GROUPS, "jagged", 0.01)
    plan += _columns(count - len(plan), _FLAT_GROUPS, "float", 0.02)
    return tuple(plan)


def _sparse(rng, size, rate):
    levels = rng.integers(1, 16, size).astype(np.float32) / np.float32(16.0)
    return np.where(rng.random(size) < rate, levels, np.float32(0.0))


def _add_fillers(rng, plan, n, collections, flat):
    for kind, group, name, rate in plan:
        if kind == "bool":
            flat[name] = rng.random(n) < rate
        elif kind == "float":
            flat[name] = _sparse(rng, n, rate)
        else:
            fields = collections[group][1]
            fields[name[len(group) + 1 :]] = _sparse(rng, len(fields["pt"]), rate)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line ``hep-executor make-samples``: write a sample set and its ``fileset.json``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments after the program name (a leading ``--`` is skipped);
        ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        0 on success, 2 on a bad setting.
    """
    parser = argparse.ArgumentParser(
        prog="hep-executor make-samples",
        description="Write NanoAOD-like ROOT files (ttH_EFT, ttbar, data) and their fileset.json.",
    )
    parser.add_argument("--out", default="sample_data", help="output folder (default: %(default)s)")
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS_PER_FILE, help="events per file (%(default)s)")
    parser.add_argument("--files", type=int, default=DEFAULT_FILES_PER_DATASET, help="files per dataset (%(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (%(default)s)")
    parser.add_argument("--n-wc", type=int, default=DEFAULT_N_WC, help="Wilson coefficients (%(default)s)")
    parser.add_argument("--extra-branches", type=int, default=DEFAULT_EXTRA_BRANCHES, help="fillers (%(default)s)")
    parser.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE, help="events per basket (%(default)s)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, help="datasets to write (default: all)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv[1:] if argv[:1] == ["--"] else argv)
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
        print(f"hep-executor make-samples: error: {exc}", file=sys.stderr)
        return 2
    for dataset, paths in fileset.items():
        for path in paths:
            print(f"{dataset:8s} {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    print(f"fileset: {os.path.join(os.path.abspath(args.out), 'fileset.json')}")
    return 0
