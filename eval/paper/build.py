"""Build the paper from the committed results: ``paper.md``, ``paper.html``, ``paper.pdf`` and ``figures/``.

python eval/paper/build.py --output eval/paper/build
"""

from modeling_lact_audio.paper import main

if __name__ == "__main__":
    main()
