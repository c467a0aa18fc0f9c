"""Model inputs that used to crash inside torch now raise naming what was wrong."""

import pytest
import torch

from modeling_lact_audio import LaCTAudioForCausalLM, LaCTAudioForCTC
from modeling_lact_audio.cache_lact_audio import LaCTCache

from ..model_testers import LaCTAudioModelTester


@pytest.fixture(scope="module")
def ctc():
    tester = LaCTAudioModelTester()
    config = tester.ctc_config(lact_order="update_apply", attention_pattern="block_causal")
    return tester, LaCTAudioForCTC(config).eval()


@pytest.fixture(scope="module")
def lm():
    tester = LaCTAudioModelTester()
    return tester, LaCTAudioForCausalLM(tester.lm_config()).eval()


def test_ctc_cache_of_another_batch_is_refused(ctc):
    tester, model = ctc
    x, _ = tester.features(T=36)
    cache = LaCTCache(model.config.num_hidden_layers)
    model(input_features=x[:1], past_key_values=cache, use_cache=True)
    with pytest.raises(ValueError, match="holds streams of a batch of 1, but input_features has a batch of 2"):
        model(input_features=x, past_key_values=cache, use_cache=True)


@pytest.mark.parametrize("shape", [(2, 0), (0, 37)], ids=["no time steps", "no examples"])
def test_ctc_empty_input_is_refused(ctc, shape):
    tester, model = ctc
    x, _ = tester.features()
    with pytest.raises(ValueError, match="input_features is empty"):
        model(input_features=x[: shape[0], : shape[1]])


@pytest.mark.parametrize("rows", [1, 3])
def test_ctc_labels_of_another_batch_are_refused(ctc, rows):
    tester, model = ctc
    x, mask = tester.features()
    labels = tester.labels()
    labels = torch.cat([labels, labels])[:rows]
    with pytest.raises(ValueError, match=r"labels must be \[B=2, S\]"):
        model(input_features=x, attention_mask=mask, labels=labels)


def test_lm_cache_batch_empty_input_and_label_shape(lm):
    _, model = lm
    K = model.config.num_codebooks
    ids = torch.randint(0, model.config.codebook_size, (2 * K, 9), generator=torch.Generator().manual_seed(0))
    cache = LaCTCache(model.config.num_hidden_layers)
    model(input_ids=ids[:K], past_key_values=cache, use_cache=True)
    with pytest.raises(ValueError, match="holds streams of a batch of 1, but inputs_embeds has a batch of 2"):
        model(input_ids=ids, past_key_values=cache, use_cache=True)
    with pytest.raises(ValueError, match="is empty"):
        model(input_ids=ids[:, :0])
    with pytest.raises(ValueError, match="labels must have input_ids' shape"):
        model(input_ids=ids, labels=ids[:K])
    assert torch.isfinite(model(input_ids=ids, labels=ids).loss)  # the valid call still works
