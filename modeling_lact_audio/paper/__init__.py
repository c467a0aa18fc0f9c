"""The paper: one Markdown + PDF report built from the committed results JSON under ``eval/results``.

python -m modeling_lact_audio.paper --output eval/paper/build
"""

from .build import build_paper, load_results, main, render_paper, write_pdf

__all__ = ["build_paper", "load_results", "main", "render_paper", "write_pdf"]
