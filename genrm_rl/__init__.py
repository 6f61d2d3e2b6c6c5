"""genrm-rl: Generative Verifiers (GenRM / GenRM-CoT) as reward models for RLHF.

Importing the package is cheap on purpose: it must not import ray, deepspeed, trl or even
transformers, because reward adapters are imported inside other frameworks' processes and
`genrm-rl --help` should answer instantly. Heavy imports live in the modules that use them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
