"""minigpt.interpret — causal interpretability: change what flows inside a model and watch the output.

Where :mod:`minigpt.viz` LOOKS at attention weights, this package INTERVENES, all through forward
hooks from outside the model (:mod:`.hooks` names the sites):

- :mod:`.ablation`: switch heads / MLPs off (zero or mean ablation): :func:`ablate`, :func:`head_means`,
  :func:`head_ablation_effects` (every head's effect on the loss, for the explorer and the export);
- :mod:`.patching`: activation patching between a clean and a corrupted prompt;
- :mod:`.lens`: the logit lens; :mod:`.attribution`: direct logit attribution;
- :mod:`.induction`: induction-head scores and a small model trained to form one.
"""

from .ablation import HeadEffects, Means, ablate, head_ablation_effects, head_means, reference_means
from .attribution import LogitAttribution, direct_logit_attribution
from .hooks import ActivationCache, eval_mode, hooks, run_from, run_with_cache
from .induction import (InductionTraining, attention_patterns, half_losses, induction_batch, induction_chance,
                        induction_scores, make_attention_only, previous_token_scores, repeated_random_tokens,
                        train_induction_model)
from .lens import logit_lens
from .patching import (logit_diff, normalise, patch_heads, patch_residual, patched, run_metric,
                       target_logprob)

__all__ = [
    "ActivationCache", "HeadEffects", "InductionTraining", "LogitAttribution", "Means", "ablate", "attention_patterns",
    "direct_logit_attribution", "eval_mode", "half_losses", "head_ablation_effects", "head_means", "hooks", "induction_batch",
    "induction_chance", "induction_scores", "logit_diff", "logit_lens", "make_attention_only", "normalise",
    "patch_heads", "patch_residual", "patched", "previous_token_scores", "reference_means",
    "repeated_random_tokens", "run_from", "run_metric", "run_with_cache", "target_logprob", "train_induction_model",
]
