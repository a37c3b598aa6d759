"""A TopEFT-like multilepton analysis on NanoAOD: :class:`TopEFTLikeProcessor` and :func:`summarize`.

Selection, in the spirit of the CMS top-quark EFT multilepton analysis:

- events pass ``Flag_goodVertices``, ``Flag_METFilters`` and a single- or
  double-lepton trigger;
- loose leptons: muons pt > 10 GeV, |eta| < 2.4, electrons pt > 10 GeV,
  |eta| < 2.5, |dxy| < 0.05 cm, |dz| < 0.1 cm, sip3d < 8, loose isolation
  (electrons ``cutBased >= 2``); tight leptons: medium+tight ID muons with
  ``pfRelIso04_all < 0.15``, ``cutBased >= 4`` electrons with
  ``pfRelIso03_all < 0.1``;
- jets: pt > 30 GeV, |eta| < 2.4, tight ID (``jetId & 2``), Delta R > 0.4 from
  every loose lepton; b tags at the DeepJet loose and medium points;
- categories on tight leptons (no extra loose one for 2lss and 3l), with
  >= 1 medium or >= 2 loose b tags, split by jet multiplicity:
  ``2lss`` (same-sign pair, pt > 25/15) in 4, 5, 6, >= 7 jets; ``3l``
  (pt > 25/15/10, total charge +-1) in 2, 3, 4, >= 5 jets; ``4l``
  (pt > 25/15/10/10, total charge 0) in 2, 3, >= 4 jets.

Histograms have axes ``dataset``, ``category``, ``systematic`` (nominal,
lepSFUp, lepSFDown; data fills nominal only), ``coefficient`` (the EFT
quadratic coefficients, see :mod:`processors.eft`) and the variable.
EFT samples fill every coefficient bin with weight times coefficient;
other samples fill only bin 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import awkward as ak
import hist
import numpy as np
from coffea import processor
from coffea.nanoevents.methods import candidate

from hep_executor.errors import ConfigError
from processors import eft

__all__ = ["CATEGORIES", "JET_BINS", "SYSTEMATICS", "TopEFTLikeProcessor", "summarize"]

JET_BINS: dict[str, tuple[int, ...]] = {"2lss": (4, 5, 6, 7), "3l": (2, 3, 4, 5), "4l": (2, 3, 4)}
"""Jet-multiplicity bins of each lepton category; the last bin is inclusive."""


def _jet_labels(lepton_category: str) -> list[str]:
    bins = JET_BINS[lepton_category]
    return [f"{lepton_category}_{n}j" for n in bins[:-1]] + [f"{lepton_category}_ge{bins[-1]}j"]


CATEGORIES: tuple[str, ...] = tuple(label for cat in JET_BINS for label in _jet_labels(cat))
"""Every category label, e.g. ``2lss_4j`` ... ``4l_ge4j``."""

SYSTEMATICS: tuple[str, ...] = ("nominal", "lepSFUp", "lepSFDown")
"""Weight variations on the ``systematic`` axis."""

TRIGGERS = (
    "IsoMu24",
    "Ele32_WPTight_Gsf",
    "Mu17_TrkIsoVVL_Mu8_TrkIsoVVL_DZ_Mass3p8",
    "Ele23_Ele12_CaloIdL_TrackIdL_IsoVL",
    "Mu23_TrkIsoVVL_Ele12_CaloIdL_TrackIdL_IsoVL",
)
BTAG_LOOSE, BTAG_MEDIUM = 0.0490, 0.2783  # DeepJet working points
_VARIABLES = {
    "l0pt": (hist.axis.Regular, (20, 0.0, 200.0), "Leading lepton $p_T$ [GeV]"),
    "ht": (hist.axis.Regular, (20, 0.0, 1000.0), "$H_T$ [GeV]"),
    "njets": (hist.axis.Integer, (0, 10), "Jet multiplicity"),
    "met": (hist.axis.Regular, (20, 0.0, 300.0), "$p_T^{miss}$ [GeV]"),
}


class TopEFTLikeProcessor(processor.ProcessorABC):
    """Multilepton (2lss, 3l, 4l) selection with EFT-parametrized histograms.

    Parameters
    ----------
    n_wc : int
        Wilson coefficients of the EFT samples; their ``EFTfitCoefficients``
        must hold ``(n_wc+1)(n_wc+2)/2`` values per event.
    wc_names : sequence of str, optional
        Names of the Wilson coefficients, kept on the ``coefficient`` axis;
        :func:`processors.eft.default_wc_names` by default.

    Notes
    -----
    ``process`` returns ``{"hists": {name: hist.Hist}, "cutflow": {dataset:
    {step: int}}, "sumw": {dataset: float}}``, which
    ``coffea.processor.accumulate`` merges. The cutflow steps are ``all``,
    ``filters``, ``trigger``, then for each lepton category ``<cat>_leptons``,
    ``<cat>_btag`` and ``<cat>`` (after the jet requirement: the events
    selected). ``sumw`` sums ``genWeight`` over all events (the event count
    for data).
    """

    def __init__(self, n_wc: int = 2, wc_names: Sequence[str] | None = None):
        if isinstance(n_wc, bool) or not isinstance(n_wc, int) or not 1 <= n_wc <= 10:
            msg = f"TopEFTLikeProcessor n_wc={n_wc!r} must be an integer from 1 to 10"
            raise ConfigError(msg)
        self.n_wc = n_wc
        self.wc_names = tuple(eft.coefficient_axis(n_wc, wc_names).wc_names)

    def empty_hists(self) -> dict[str, hist.Hist]:
        """Empty histograms, the shape of what :meth:`process` fills."""
        out = {}
        for name, (kind, args, label) in _VARIABLES.items():
            out[name] = hist.Hist(
                hist.axis.StrCategory([], growth=True, name="dataset", label="Dataset"),
                hist.axis.StrCategory(list(CATEGORIES), name="category", label="Category"),
                hist.axis.StrCategory(list(SYSTEMATICS), name="systematic", label="Systematic"),
                eft.coefficient_axis(self.n_wc, self.wc_names),
                kind(*args, name=name, label=label),
                storage=hist.storage.Double(),
            )
        return out

    def process(self, events):
        """Select, categorize and fill one chunk of NanoEvents."""
        dataset = events.metadata["dataset"]
        n = len(events)
        is_mc = "genWeight" in events.fields
        gen_weight = ak.to_numpy(events.genWeight).astype(np.float64) if is_mc else np.ones(n)
        coefficients = self._coefficients(events)

        loose, tight = _leptons(events)
        jets = events.Jet
        good = (jets.pt > 30) & (abs(jets.eta) < 2.4) & ((jets.jetId & 2) > 0)
        good = good & ak.all(jets.metric_table(loose) > 0.4, axis=2)
        jets = jets[good]
        njets = ak.to_numpy(ak.num(jets))
        n_medium = ak.to_numpy(ak.sum(jets.btagDeepFlavB > BTAG_MEDIUM, axis=1))
        n_loose = ak.to_numpy(ak.sum(jets.btagDeepFlavB > BTAG_LOOSE, axis=1))
        btag = (n_medium >= 1) | (n_loose >= 2)

        flags = ak.to_numpy(events.Flag.goodVertices & events.Flag.METFilters)
        fired = [ak.to_numpy(events.HLT[t]) for t in TRIGGERS if t in events.HLT.fields]
        trigger = np.logical_or.reduce(fired) if fired else np.zeros(n, bool)
        cutflow = {"all": n, "filters": int(flags.sum()), "trigger": int((flags & trigger).sum())}
        presel = flags & trigger

        labels = np.full(n, "", dtype=f"<U{max(map(len, CATEGORIES))}")
        for category, passed in _lepton_categories(loose, tight).items():
            bins = JET_BINS[category]
            steps = (presel & passed, presel & passed & btag, presel & passed & btag & (njets >= bins[0]))
            counts = (int(mask.sum()) for mask in steps)
            cutflow[f"{category}_leptons"], cutflow[f"{category}_btag"], cutflow[category] = counts
            index = np.clip(njets, bins[0], bins[-1]) - bins[0]
            labels[steps[-1]] = np.asarray(_jet_labels(category))[index[steps[-1]]]

        selected = labels != ""
        sf = ak.to_numpy(ak.prod(tight.sf, axis=1))
        sf_up = ak.to_numpy(ak.prod(tight.sf + tight.sf_unc, axis=1))
        sf_down = ak.to_numpy(ak.prod(tight.sf - tight.sf_unc, axis=1))
        weights = {"nominal": gen_weight * (sf if is_mc else 1.0)}
        if is_mc:
            weights.update(lepSFUp=gen_weight * sf_up, lepSFDown=gen_weight * sf_down)
        values = {
            "l0pt": ak.to_numpy(ak.fill_none(ak.firsts(tight.pt), 0.0)),
            "ht": ak.to_numpy(ak.sum(jets.pt, axis=1)),
            "njets": njets,
            "met": ak.to_numpy(events.MET.pt),
        }
        hists = self.empty_hists()
        for systematic, weight in weights.items():
            self._fill(hists, dataset, systematic, labels[selected], values, selected, weight, coefficients)
        return {
            "hists": hists,
            "cutflow": {dataset: cutflow},
            "sumw": {dataset: float(gen_weight.sum())},
        }

    def postprocess(self, accumulator):
        """Nothing to add after merging; returns ``accumulator`` unchanged."""
        return accumulator

    def _coefficients(self, events) -> np.ndarray | None:
        """``(events, coefficients)`` float64 array, or None for samples without EFT coefficients."""
        if "EFTfitCoefficients" not in events.fields:
            return None
        expected = eft.n_coefficients(self.n_wc)
        try:
            coefficients = ak.to_numpy(events.EFTfitCoefficients).astype(np.float64)
            found = coefficients.shape[1] if coefficients.ndim == 2 else "a varying number of"
        except ValueError:  # jagged with varying lengths
            coefficients, found = None, "a varying number of"
        if found != expected:
            inferred = eft.n_wc_from_coefficients(found) if isinstance(found, int) else None
            where = f"{events.metadata.get('filename', 'input')} (dataset {events.metadata['dataset']})"
            also = f" (n_wc={inferred})" if inferred is not None else ""
            msg = (
                f"{where}: EFTfitCoefficients has {found} coefficients per event{also}, but "
                f"TopEFTLikeProcessor(n_wc={self.n_wc}) expects {expected}; "
                "construct the processor with the n_wc the samples were made with"
            )
            raise ConfigError(msg)
        return coefficients

    @staticmethod
    def _fill(hists, dataset, systematic, labels, values, selected, weight, coefficients):
        weight = weight[selected]
        if coefficients is None:
            n_coef, columns = 1, weight[:, None]
        else:
            n_coef = coefficients.shape[1]
            columns = weight[:, None] * coefficients[selected]
        for name, h in hists.items():
            h.fill(
                dataset=dataset,
                category=np.repeat(labels, n_coef),
                systematic=systematic,
                coefficient=np.tile(np.arange(n_coef), len(weight)),
                **{name: np.repeat(values[name][selected], n_coef)},
                weight=columns.ravel(),
            )


def _candidates(collection, sf, sf_unc):
    fields = {key: collection[key] for key in ("pt", "eta", "phi", "mass", "charge")}
    fields.update(sf=sf, sf_unc=sf_unc)
    return ak.zip(fields, with_name="PtEtaPhiMCandidate", behavior=candidate.behavior)


def _leptons(events):
    """Loose and tight leptons (muons and electrons together, pt-ordered) with scale factors."""
    mu, el = events.Muon, events.Electron
    common_mu = (abs(mu.dxy) < 0.05) & (abs(mu.dz) < 0.1) & (mu.sip3d < 8)
    common_el = (abs(el.dxy) < 0.05) & (abs(el.dz) < 0.1) & (el.sip3d < 8)
    loose_mu = common_mu & (mu.pt > 10) & (abs(mu.eta) < 2.4) & (mu.pfRelIso04_all < 0.4)
    loose_el = common_el & (el.pt > 10) & (abs(el.eta) < 2.5) & (el.cutBased >= 2) & (el.pfRelIso03_all < 0.4)
    tight_mu = loose_mu & mu.mediumId & mu.tightId & (mu.pfRelIso04_all < 0.15)
    tight_el = loose_el & (el.cutBased >= 4) & (el.pfRelIso03_all < 0.1)
    mu_sf = ak.full_like(mu.pt, 0.98)
    mu_unc = 0.01 + 0.01 * abs(mu.eta) / 2.4
    el_sf = ak.full_like(el.pt, 0.96)
    el_unc = 0.02 + 0.02 * abs(el.eta) / 2.5
    muons, electrons = _candidates(mu, mu_sf, mu_unc), _candidates(el, el_sf, el_unc)

    def combine(mu_mask, el_mask):
        both = ak.concatenate([muons[mu_mask], electrons[el_mask]], axis=1)
        return both[ak.argsort(both.pt, axis=1, ascending=False)]

    return combine(loose_mu, loose_el), combine(tight_mu, tight_el)


def _lepton_categories(loose, tight) -> dict[str, np.ndarray]:
    """Boolean masks of the 2lss, 3l and 4l lepton requirements."""
    n_tight, n_loose = ak.to_numpy(ak.num(tight)), ak.to_numpy(ak.num(loose))
    padded = ak.pad_none(tight, 4, axis=1)
    pt = [ak.to_numpy(ak.fill_none(padded.pt[:, i], 0.0)) for i in range(4)]
    charge = [ak.to_numpy(ak.fill_none(padded.charge[:, i], 0)) for i in range(4)]
    return {
        "2lss": (n_tight == 2) & (n_loose == 2) & (charge[0] == charge[1]) & (pt[0] > 25) & (pt[1] > 15),
        "3l": (n_tight == 3) & (n_loose == 3) & (pt[0] > 25) & (pt[1] > 15) & (pt[2] > 10)
        & (np.abs(charge[0] + charge[1] + charge[2]) == 1),
        "4l": (n_tight >= 4) & (pt[0] > 25) & (pt[1] > 15) & (pt[2] > 10) & (pt[3] > 10)
        & (charge[0] + charge[1] + charge[2] + charge[3] == 0),
    }


def summarize(output: dict) -> dict[str, dict[str, float]]:
    """Per-dataset summary of a merged :class:`TopEFTLikeProcessor` output.

    Parameters
    ----------
    output : dict
        The merged output (``{"hists", "cutflow", "sumw"}``).

    Returns
    -------
    dict
        ``{dataset: {"events": int, "2lss": int, "3l": int, "4l": int,
        "sumw": float}}``: events processed, events selected per lepton
        category, and the sum of generator weights (event count for data).
    """
    summary = {}
    for dataset, cutflow in output.get("cutflow", {}).items():
        row = {"events": int(cutflow.get("all", 0))}
        row.update({category: int(cutflow.get(category, 0)) for category in JET_BINS})
        row["sumw"] = float(output.get("sumw", {}).get(dataset, 0.0))
        summary[dataset] = row
    return summary
