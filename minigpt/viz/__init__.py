"""minigpt.viz — look inside any minigpt model: where does each head attend, and why?

Capture (:mod:`.capture`) runs a text through the model in eval mode and keeps every layer's and
head's attention weights with the token strings. Then:

- static figures (matplotlib): :func:`attention_heatmap`, :func:`plot_head`, :func:`plot_model_view`,
  :func:`plot_head_average`, :func:`plot_query_bars`, :func:`plot_attention_lines`,
  :func:`plot_attention_stages`; :func:`slide_style` and :func:`save_figure` for slides, PNG, SVG;
- interactive (ipywidgets): :class:`AttentionExplorer`;
- standalone HTML (inline JS, no network): :func:`export_html`;
- both take ``effects=`` (e.g. :func:`minigpt.interpret.head_ablation_effects`): the selected head's
  causal effect beside its pattern (:mod:`.effects`);
- analysis: :func:`head_entropy`, :func:`previous_token_score`, :func:`first_token_score`,
  :func:`token_class_score`, :func:`induction_score` / :func:`induction_scores`,
  :func:`attention_rollout`, with plots in :mod:`.analysis_plots`.
"""

from .analysis import (InductionResult, attention_rollout, entropy_bound, first_token_score, head_entropy,
                       induction_score, induction_scores, induction_targets, previous_token_score,
                       repeated_random_tokens, row_entropy, self_token_score, token_class_score, top_heads,
                       uniform_attention)
from .analysis_plots import plot_entropy, plot_head_scores, plot_induction, plot_rollout
from .capture import AttentionCapture, attention_weights, capture_attention, eval_mode
from .explorer import AttentionExplorer
from .export import export_html
from .headview import plot_attention_lines, plot_query_bars
from .heatmap import attention_heatmap, plot_head, plot_head_average, plot_model_view
from .stages import AttentionStages, attention_stages, block_qkv, plot_attention_stages, stages_from_qk
from .style import save_figure, slide_style, token_label

__all__ = [
    "AttentionCapture", "AttentionExplorer", "AttentionStages", "InductionResult", "attention_heatmap",
    "attention_rollout", "attention_stages", "attention_weights", "block_qkv", "capture_attention",
    "entropy_bound", "eval_mode", "export_html", "first_token_score", "head_entropy", "induction_score",
    "induction_scores", "induction_targets", "plot_attention_lines", "plot_attention_stages", "plot_entropy",
    "plot_head", "plot_head_average", "plot_head_scores", "plot_induction", "plot_model_view",
    "plot_query_bars", "plot_rollout", "previous_token_score", "repeated_random_tokens", "row_entropy",
    "save_figure", "self_token_score", "slide_style", "stages_from_qk", "token_class_score", "token_label",
    "top_heads", "uniform_attention",
]
