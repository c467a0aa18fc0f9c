"""lact-audio: LaCT (Large-Chunk Test-Time Training) audio models for transformers."""
