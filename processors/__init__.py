"""Analysis processors for coffea's ``processor.Runner`` and hep_executor.

- :class:`~processors.topeft_like.TopEFTLikeProcessor`: multilepton
  (2lss, 3l, 4l) selection with EFT-parametrized histograms;
  :func:`~processors.topeft_like.summarize` tabulates its output.
- :class:`~processors.dimuon.DimuonProcessor`: opposite-sign dimuon mass.
- :mod:`processors.eft`: EFT coefficient helpers (``evaluate`` a histogram
  at a Wilson-coefficient point).
"""

from processors.dimuon import DimuonProcessor
from processors.topeft_like import TopEFTLikeProcessor, summarize

__all__ = ["DimuonProcessor", "TopEFTLikeProcessor", "summarize"]
