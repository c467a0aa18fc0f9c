"""``python -m modeling_lact_audio.training CONFIG.yaml [--flag value ...]``: see ``trainer.py``."""

from .trainer import main

if __name__ == "__main__":
    main()
