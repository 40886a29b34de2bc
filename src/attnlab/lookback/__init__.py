"""Lookback Lens (Chuang et al., EMNLP 2024): detect and mitigate contextual hallucinations from attention maps.

The *lookback ratio* of head (l, h) at generated token t is the mean attention the query that produces t puts on
the context over that plus its mean attention on the tokens after the context (:mod:`.probe`); averaged over a
span of the reply it gives one ``[L*H]`` feature vector (:mod:`.features`), and a logistic regression on those
vectors (:mod:`.detector`) says how likely the span is faithful to the context. Labelled data without an
annotator (:mod:`.data`), AUROC with baselines (:mod:`.evaluate`) and detector-guided decoding
(:mod:`.decoding`) complete it; ``attnlab lookback fit|score|generate`` is the command line.
"""
from attnlab.lookback.detector import LookbackDetector
from attnlab.lookback.probe import LookbackRatio, Prompt, generate_with_ratios, lookback_prompt, teacher_forced

__all__ = ["LookbackDetector", "LookbackRatio", "Prompt", "generate_with_ratios", "lookback_prompt", "teacher_forced"]
