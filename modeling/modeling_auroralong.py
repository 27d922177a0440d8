"""AuroraLong: SigLIP with sorted token merging -> 2-layer MLP -> RWKV-6, for video question answering.

Each frame becomes `tokens_per_frame(vision_config)` visual tokens that replace the `<video>` placeholder tokens of
the prompt (the processor expands them); the RNN reads them with the text, in order, carrying a state of constant
size. `generate` and `prefill` (streaming.py) feed frames a chunk at a time into that state, so a video of any
length costs the same memory.
"""

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutputWithPast

from .cache_rwkv6 import CACHE_NAME, Rwkv6Cache, resolve_cache_argument
from .checkpoint_checks import CompleteCheckpointMixin
from .configuration_auroralong import AuroraLongConfig
from .configuration_siglip_tome import tokens_per_frame
from .decode_step_rwkv6 import Rwkv6DecodeStep
from .generation_rwkv6 import Rwkv6GenerationMixin
from .modeling_rwkv6 import FEED_CHUNK_TOKENS, Rwkv6Model
from .modeling_siglip_tome import SiglipToMeVisionModel
from .streaming import AuroraLongStreamingMixin, frame_chunks, frame_count, video_list


class AuroraLongMultiModalProjector(nn.Module):
    """Linear (vision width -> text width), activation, Linear (text width -> text width)."""

    def __init__(self, config: AuroraLongConfig):
        super().__init__()
        vision_width, text_width = config.vision_config.hidden_size, config.text_config.hidden_size
        self.linear_1 = nn.Linear(vision_width, text_width, bias=config.projector_bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text_width, text_width, bias=config.projector_bias)

    def forward(self, features):
        return self.linear_2(self.act(self.linear_1(features)))


class AuroraLongPreTrainedModel(CompleteCheckpointMixin, PreTrainedModel):
    config_class = AuroraLongConfig
    config: AuroraLongConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Rwkv6Block", "SiglipEncoderLayer"]
    _supports_sdpa = True
    _is_stateful = True  # generate() refuses assisted/speculative decoding: a recurrent state cannot roll back

    @torch.no_grad()
    def _init_weights(self, module):
        """The projector here; the tower and the language model initialise themselves (SigLIP's and Finch's)."""
        if isinstance(module, AuroraLongMultiModalProjector):
            for linear in (module.linear_1, module.linear_2):
                init.normal_(linear.weight, std=linear.in_features ** -0.5)
                if linear.bias is not None:
                    init.zeros_(linear.bias)
        elif module is getattr(self, "lm_head", None):
            init.normal_(module.weight, std=self.config.text_config.initializer_range)


class AuroraLongModel(AuroraLongPreTrainedModel):
    def __init__(self, config: AuroraLongConfig):
        super().__init__(config)
        self.vision_tower = SiglipToMeVisionModel(config.vision_config)
        self.multi_modal_projector = AuroraLongMultiModalProjector(config)
        self.language_model = Rwkv6Model(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_image_features(self, pixel_values: torch.FloatTensor, frames_per_pass: int = 16) -> torch.FloatTensor:
        """pixel_values [N, 3, H, W] -> projected visual tokens [N, T_f, C], `frames_per_pass` frames at a time.

        Raises ValueError when the pixel values, or the features made of them, are not finite: NaN or infinite
        inputs, or values far outside SigLIP's [-1, 1] that overflow in the tower, would otherwise reach the state
        and make every answer silently empty.
        """
        if not bool(torch.isfinite(pixel_values).all()):
            bad = int((~torch.isfinite(pixel_values)).sum())
            raise ValueError(f"pixel_values hold {bad} NaN or infinite value(s) of {pixel_values.numel()}.")
        features = []
        for start in range(0, pixel_values.shape[0], frames_per_pass):
            tower = self.vision_tower(pixel_values[start:start + frames_per_pass].to(self.vision_tower.dtype))
            features.append(self.multi_modal_projector(tower.last_layer_state))
        features = torch.cat(features)
        if not bool(torch.isfinite(features).all()):
            low, high = float(pixel_values.min()), float(pixel_values.max())
            raise ValueError(
                f"The visual features are not finite for pixel values in [{low:.3g}, {high:.3g}] "
                f"({self.vision_tower.dtype}): the processor gives [-1, 1]; values far outside overflow in the "
                "tower (or its weights are not finite)."
            )
        return features

    def get_video_features(self, pixel_values_videos, video_frame_counts=None,
                           frames_per_pass: int = 16) -> torch.FloatTensor:
        """The visual tokens of every real frame, video after video: [sum of frames, T_f, C].

        pixel_values_videos: [V, F, 3, H, W] (frames past each video's `video_frame_counts` [V] are padding) or a
        list of videos, each [F, 3, H, W] or a lazy video (the processor's `LazyVideo`, decoded here)."""
        videos = video_list(pixel_values_videos, video_frame_counts)
        return torch.cat([self.get_image_features(chunk, frames_per_pass) for video in videos
                          for chunk in frame_chunks(video, frames_per_pass)])

    def embed(self, input_ids, pixel_values=None, pixel_values_videos=None, video_frame_counts=None):
        """input_ids [B, T] with placeholder tokens -> embeddings [B, T, C], visual tokens written in place."""
        config = self.config
        placeholders = (input_ids == config.video_token_id) | (input_ids == config.image_token_id)
        embeds = self.language_model.embed(input_ids).masked_fill(placeholders.unsqueeze(-1), 0.0)
        visuals = (
            (config.video_token_id, "video", pixel_values_videos,
             lambda: self.get_video_features(pixel_values_videos, video_frame_counts)),
            (config.image_token_id, "image", pixel_values, lambda: self.get_image_features(pixel_values)),
        )
        for token_id, kind, pixels, features_of in visuals:
            mask = input_ids == token_id
            if pixels is None:
                if mask.any():
                    raise ValueError(f"input_ids hold {kind} placeholders but no {kind} pixel values were given.")
                continue
            features = features_of().flatten(0, 1)
            if features.shape[0] != int(mask.sum()):
                raise ValueError(
                    f"The {kind}s give {features.shape[0]} visual tokens but input_ids hold {int(mask.sum())} "
                    f"{kind} placeholders: the processor and the model disagree on frames or tokens per frame."
                )
            embeds = embeds.masked_scatter(mask.unsqueeze(-1), features.to(embeds.dtype))
        return embeds

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_frame_counts: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Rwkv6Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        past_key_values: Rwkv6Cache | None = None,
        **kwargs,
    ):
        """Returns the language model's `BaseModelOutputWithPast` (last_hidden_state [B, T, C], the state in its
        `CACHE_NAME` field, hidden_states). `cache` is named `past_key_values` before transformers 5.24 (both work)."""
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (with visual placeholders) or inputs_embeds.")
            inputs_embeds = self.embed(input_ids, pixel_values, pixel_values_videos, video_frame_counts)
        cache = resolve_cache_argument(cache, past_key_values)
        before = None if cache is None else (cache.fingerprint, cache.fingerprint_length)
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        if before is not None:  # the language model saw embeddings only; the ids they came from are known here
            cache.fingerprint, cache.fingerprint_length = before
            cache.record(input_ids)
        return outputs


class AuroraLongForConditionalGeneration(AuroraLongPreTrainedModel, AuroraLongStreamingMixin, Rwkv6GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embeddings.weight"}

    def __init__(self, config: AuroraLongConfig):
        super().__init__(config)
        self.model = AuroraLongModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens per frame or image: what the vision tower's S-ToMe schedule leaves of its patches."""
        return tokens_per_frame(self.config.vision_config)

    def set_token_kept_ratio(self, ratio: float) -> int:
        """Keep `ratio` of each frame's patches from the next forward on (`SiglipToMeVisionConfig.
        set_token_kept_ratio`: `tome_r` cleared, validated, nothing changed on a ValueError). The model's vision
        config and the tower's change together (they are one object unless a copy was made). Returns the new
        `tokens_per_frame`, which a processor's `tokens_per_frame` must then equal."""
        vision, tower = self.config.vision_config, self.model.vision_tower.config
        count = vision.set_token_kept_ratio(ratio)
        if tower is not vision:
            tower.set_token_kept_ratio(ratio)
        return count

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_frame_counts: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Rwkv6Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Rwkv6Cache | None = None,
        decode_step: Rwkv6DecodeStep | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits [B, T, V] (the last `logits_to_keep` positions when > 0); loss when labels [B, T] are given
        (-100 where no loss is wanted, e.g. on the prompt and the visual tokens). `cache` (`past_key_values` before
        transformers 5.24; both work): the RNN state to continue, updated in place and returned in the output's
        `CACHE_NAME` field. `decode_step`: what `generate` passes for a decoded text token (ids [B, 1], real, with a
        cache): the token runs through that `Rwkv6DecodeStep` instead (same logits and state)."""
        if decode_step is not None:
            return decode_step(input_ids, resolve_cache_argument(cache, past_key_values))
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            video_frame_counts=video_frame_counts,
            attention_mask=attention_mask,
            cache=resolve_cache_argument(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        kept = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(outputs.last_hidden_state[:, kept])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size,
                                      **kwargs)
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, **{CACHE_NAME: getattr(outputs, CACHE_NAME)}
        )

    def generate(
        self,
        inputs: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values_videos=None,
        video_frame_counts: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        cache: Rwkv6Cache | None = None,
        past_key_values: Rwkv6Cache | None = None,
        chunk_frames: int | None = None,
        **kwargs,
    ):
        """transformers' `generate`, the prompt streamed: every prompt token but the last goes through `prefill`
        (videos `chunk_frames` frames at a time, so memory does not grow with their length; None: the device's
        `default_chunk_frames`) and the decoding loop
        starts from that state. Everything `generate` takes works as usual (beams, sampling, streamers,
        `return_dict_in_generate`); `sequences` hold `input_ids` followed by the new tokens.

        `cache` (or `past_key_values`): a state to continue, e.g. `Rwkv6Cache.load(path)` or the `cache` of an
        earlier `return_dict_in_generate` output. It is not changed: the advanced state is the output's. With it,
        `input_ids` are either the whole sequence, whose first `seen_tokens` ids the state has seen (they are
        skipped, as for any transformers cache), or new tokens only: whatever does not begin with exactly the ids
        the state has seen (told by the state's `fingerprint`; a state fed embeddings only cannot tell, and then
        ids longer than `seen_tokens` count as the whole sequence), or any ids with an `attention_mask` of
        `seen_tokens + new` columns. Visuals whose placeholders the state has seen may be passed again; they are
        skipped without being decoded.
        """
        input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
        state = resolve_cache_argument(cache, past_key_values)
        if input_ids is None or not self._uses_cache(state, kwargs):  # transformers' own path, nothing streamed
            return super().generate(input_ids, attention_mask=attention_mask, pixel_values_videos=pixel_values_videos,
                                    video_frame_counts=video_frame_counts, pixel_values=pixel_values,
                                    cache=state, **kwargs)
        visuals = {"pixel_values_videos": pixel_values_videos, "video_frame_counts": video_frame_counts,
                   "pixel_values": pixel_values, "chunk_frames": chunk_frames}
        return self._generate_streamed(input_ids, attention_mask, state, prefill_kwargs=visuals, **kwargs)

    def _prefill_prompt(self, new_ids, new_mask, state, pixel_values_videos=None, video_frame_counts=None,
                        pixel_values=None, chunk_frames: int | None = None) -> None:
        """Stream the new prompt ids [B, N] but the last, with the visuals of their placeholders, into `state`."""
        visual_ids = (self.config.video_token_id, self.config.image_token_id)
        if torch.isin(new_ids[:, -1], torch.tensor(visual_ids, device=new_ids.device)).any():
            raise ValueError("The prompt ends with a visual placeholder: end it with text (e.g. "
                             "apply_chat_template(..., add_generation_prompt=True) ends it with 'Assistant:').")
        videos, images = self._unseen_visuals(new_ids, pixel_values_videos, video_frame_counts, pixel_values)
        if new_ids.shape[1] > 1:
            self.prefill(new_ids[:, :-1], new_mask[:, :-1], videos, None, images, cache=state,
                         chunk_frames=chunk_frames)

    def _unseen_visuals(self, new_ids, pixel_values_videos, video_frame_counts, pixel_values):
        """The visuals of the placeholders in `new_ids` [B, N]: all of those given, or, when more were given (a
        whole conversation again), the last ones, those before them belonging to tokens a state has seen."""
        videos = video_list(pixel_values_videos, video_frame_counts)
        per_frame = self.tokens_per_frame
        needed = int((new_ids == self.config.video_token_id).sum())
        given = [frame_count(video) * per_frame for video in videos]
        skipped = 0
        while skipped < len(videos) and sum(given[skipped:]) > needed:
            skipped += 1
        if sum(given[skipped:]) != needed:
            skipped = 0  # no tail fits: prefill reports the disagreement
        if pixel_values is not None:
            pixel_values = pixel_values[pixel_values.shape[0] - int((new_ids == self.config.image_token_id).sum())
                                        // per_frame:]
        return videos[skipped:], pixel_values

    def feed(self, cache: Rwkv6Cache, input_ids: torch.LongTensor | None = None,
             inputs_embeds: torch.FloatTensor | None = None, attention_mask: torch.Tensor | None = None,
             chunk_tokens: int = FEED_CHUNK_TOKENS) -> Rwkv6Cache:
        """`Rwkv6Model.feed` of the language model: advance `cache` over text ids [B, T] (no placeholders) or
        embeddings [B, T, C], `chunk_tokens` positions at a time, keeping no output. Returns `cache`."""
        return self.model.language_model.feed(cache, input_ids, inputs_embeds, attention_mask, chunk_tokens)


__all__ = [
    "AuroraLongForConditionalGeneration", "AuroraLongModel", "AuroraLongMultiModalProjector",
    "AuroraLongPreTrainedModel",
]
