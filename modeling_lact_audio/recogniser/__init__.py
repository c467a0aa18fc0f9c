"""The recogniser recipe: LaCT layers trained on the cached states of a frozen pretrained Whisper encoder.

``encoder_cache``: the frozen encoder run once per corpus split, its states stored with ``datasets``;
``sessions``: training sequences of 1-8 utterances of one speaker whose fast weights carry across
utterances; ``lm``: a word n-gram LM from the training text and CTC beam search with it.
"""
