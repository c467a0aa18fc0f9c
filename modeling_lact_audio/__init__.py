"""lact-audio: LaCT (Large-Chunk Test-Time Training) audio models for transformers.

Importing the package registers the models with the Auto classes (``AutoConfig``, ``AutoModel``,
``AutoModelForCTC``, ``AutoModelForCausalLM``) and the processors with ``AutoFeatureExtractor``,
``AutoTokenizer`` and ``AutoProcessor``, and marks the models for ``register_for_auto_class`` so that
``save_pretrained`` / ``push_to_hub`` write a folder that loads with ``trust_remote_code=True``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForCTC

from .cache_lact_audio import LaCTCache, LaCTLayerCache
from .configuration_lact_audio import LaCTAudioConfig
from .modeling_lact_audio import (
    LaCTAudioForCausalLM,
    LaCTAudioForCTC,
    LaCTAudioModel,
    LaCTAudioPreTrainedModel,
    LaCTCTCOutput,
    count_parameters,
)
from .processors import register_auto_classes

AutoConfig.register("lact_audio", LaCTAudioConfig, exist_ok=True)
AutoModel.register(LaCTAudioConfig, LaCTAudioModel, exist_ok=True)
AutoModelForCTC.register(LaCTAudioConfig, LaCTAudioForCTC, exist_ok=True)
AutoModelForCausalLM.register(LaCTAudioConfig, LaCTAudioForCausalLM, exist_ok=True)
LaCTAudioConfig.register_for_auto_class()
LaCTAudioModel.register_for_auto_class("AutoModel")
LaCTAudioForCTC.register_for_auto_class("AutoModelForCTC")
LaCTAudioForCausalLM.register_for_auto_class("AutoModelForCausalLM")

register_auto_classes(LaCTAudioConfig)

__all__ = [
    "LaCTAudioConfig",
    "LaCTAudioModel",
    "LaCTAudioForCTC",
    "LaCTAudioForCausalLM",
    "LaCTAudioPreTrainedModel",
    "LaCTCache",
    "LaCTLayerCache",
    "LaCTCTCOutput",
    "count_parameters",
]
