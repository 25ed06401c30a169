"""``GaussianDiffusion``: the familiar one-object API, delegating to the plain math modules
(its editing methods, ``img2img`` and ``inpaint``: :mod:`ddpm.facade.edits`).

Images in and out of this class are in [0, 1] ([B, C, H, W]), as users expect; inside, the
library works in [-1, 1].
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..config import SampleConfig, resolved_guidance
from ..diffusion import OBJECTIVES, VARIANCE_TYPES, check_choice, q_sample_at
from ..errors import ConfigError
from ..likelihood import BitsPerDim, bits_per_dim
from ..losses import LOSS_TYPES, LossTerms, training_losses
from ..models.unet import image_hw
from ..sampling import Denoiser, make_plan, run_sampler, steps_and_grid
from ..sampling.common import Callback, ModelFn
from ..sampling.guidance import guided_model_fn, text_guided_model_fn
from ..schedules import Schedule, get_schedule
from ..text.base import TextBatch, TextEncoder, check_prompts
from .edits import Editing, eval_mode, normalize, unnormalize


class GaussianDiffusion(Editing, nn.Module):
    """A model and a noise schedule, with the training loss as ``forward`` and ``sample``.

    ``GaussianDiffusion(model, image_size=128, timesteps=1000, loss_type='l1')`` then
    ``loss = diffusion(images)`` and ``diffusion.sample(batch_size=16)``.

    Args:
        model: a network ``model(x_t, t)`` (or ``model(x_t, t, classes)``) with attributes
            ``channels`` and, for a learned variance, ``learned_variance``; a :class:`Unet`.
        image_size: an int (square) or (height, width).
        timesteps: T, the length of the forward process.
        loss_type: ``'l2'`` (Ho et al.) or ``'l1'``.
        objective: what the network predicts: ``'pred_noise'``, ``'pred_x0'`` or ``'pred_v'``.
        beta_schedule: ``'linear'``, ``'scaled_linear'``, ``'cosine'`` or ``'sigmoid'``.
        beta_start, beta_end: the end points of the two linear schedules (None: 1e-4 and 0.02 at
            T = 1000, scaled by 1000 / T); ``betas``: the T betas themselves, replacing the schedule.
        variance_type: ``'fixed_small'``, ``'fixed_large'`` or ``'learned_range'``; by default
            ``'learned_range'`` when the model has a learned variance, else ``'fixed_small'``.
        zero_terminal_snr: rescale the schedule so x_T is pure noise (Lin et al. 2023); needs
            ``pred_v`` or ``pred_x0``, since x_0 cannot be recovered from eps at zero SNR.
        min_snr_loss_weight, min_snr_gamma: min-SNR-gamma loss weighting (Hang et al. 2023).
        offset_noise_strength: scale of the per-channel offset added to the noise.
        vlb_weight: lambda of the hybrid loss when the variance is learned (0.001).
        p_uncond: probability of dropping a class label to the null label during training,
            for classifier-free guidance.
        auto_normalize: take and return images in [0, 1] (True) or in [-1, 1] (False).
        text_encoder: for a text-conditional model (``Unet(text_dim=...)``), what turns prompts
            into a :class:`~ddpm.text.TextBatch`: ``MiniLMEncoder()``, the builtin
            ``WordTokenizer``, or your own (see :mod:`ddpm.text.base`). Frozen: it is not a
            submodule, so ``parameters()`` does not reach it. ``p_uncond`` is then the caption
            dropout rate that trains the null caption.
    """

    def __init__(
        self,
        model: nn.Module,
        image_size: int | Sequence[int],
        timesteps: int = 1000,
        loss_type: str = "l2",
        objective: str = "pred_noise",
        beta_schedule: str = "linear",
        *,
        sampling_timesteps: int | None = None,
        variance_type: str | None = None,
        beta_start: float | None = None,
        beta_end: float | None = None,
        betas: Sequence[float] | None = None,
        zero_terminal_snr: bool = False,
        min_snr_loss_weight: bool = False,
        min_snr_gamma: float = 5.0,
        offset_noise_strength: float = 0.0,
        vlb_weight: float = 0.001,
        p_uncond: float = 0.1,
        auto_normalize: bool = True,
        text_encoder: TextEncoder | None = None,
    ):
        super().__init__()
        self.model = model
        self.channels = int(getattr(model, "channels", 3))
        self.image_size = image_hw(image_size)
        check_size = getattr(model, "check_image_size", None)
        if check_size is not None:
            check_size(*self.image_size)
        self.loss_type = check_choice("loss type", loss_type, LOSS_TYPES)
        self.objective = check_choice("objective", objective, OBJECTIVES)
        learned = bool(getattr(model, "learned_variance", False))
        if variance_type is None:
            variance_type = "learned_range" if learned else "fixed_small"
        self.variance_type = check_choice("variance type", variance_type, VARIANCE_TYPES)
        if (variance_type == "learned_range") != learned:
            raise ConfigError(
                f"variance_type {variance_type!r} does not fit a model with learned_variance={learned}; "
                "use 'learned_range' exactly when the model learns its variance"
            )
        self.schedule = get_schedule(beta_schedule, timesteps, zero_terminal_snr=zero_terminal_snr,
                                     beta_start=beta_start, beta_end=beta_end, betas=betas)
        if zero_terminal_snr and objective == "pred_noise":
            raise ConfigError(
                "zero_terminal_snr needs objective 'pred_v' or 'pred_x0': at zero SNR x_0 cannot be recovered from eps"
            )
        if not 0.0 <= p_uncond <= 1.0:
            raise ConfigError(f"p_uncond must be a probability in [0, 1]; got {p_uncond}")
        self.num_timesteps = timesteps
        self.beta_schedule = beta_schedule
        self.sampling_timesteps = sampling_timesteps or timesteps
        self._steps_given = sampling_timesteps is not None
        self.min_snr_gamma = min_snr_gamma if min_snr_loss_weight else None
        self.offset_noise_strength = offset_noise_strength
        self.vlb_weight = vlb_weight
        self.p_uncond = p_uncond
        self.auto_normalize = auto_normalize
        self.num_classes = getattr(model, "num_classes", None)
        self.text_conditional = getattr(model, "text_dim", None) is not None
        if text_encoder is not None and not self.text_conditional:
            raise ConfigError("a text_encoder was given for a model without text conditioning (build the Unet with text_dim)")
        if text_encoder is not None and getattr(model, "text_encoder", None) is None and text_encoder.dim != model.text_dim:
            raise ConfigError(f"the {text_encoder.name} text encoder gives {text_encoder.dim}-wide embeddings but the Unet "
                              f"was built for text_dim={model.text_dim}")
        self.__dict__["text_encoder"] = text_encoder  # a plain attribute, never a submodule: it stays frozen
        self._schedules: dict[torch.device, Schedule] = {}

    # ---- helpers ----------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def schedule_on(self, device: torch.device) -> Schedule:
        """The schedule's tensors on ``device`` (made once per device)."""
        device = torch.device(device)
        if device not in self._schedules:
            self._schedules[device] = self.schedule.to(device)
        return self._schedules[device]

    def model_fn(self, classes: Tensor | None = None, text: TextBatch | None = None) -> ModelFn:
        """The network as the math modules call it: ``fn(x_t, t) -> output``."""
        if text is not None:
            return lambda x, t: self.model(x, t, text=text)
        if classes is None:
            return lambda x, t: self.model(x, t)
        return lambda x, t: self.model(x, t, classes)

    def encode_prompts(self, prompts: Sequence[str] | str, batch: int, device: torch.device) -> TextBatch:
        """Prompts (one, or one per image) as a TextBatch on ``device``, checked first."""
        if not self.text_conditional:
            raise ConfigError("prompts were given but the model is not text-conditional (train it with --text-conditional)")
        if self.text_encoder is None:
            raise ConfigError("this text-conditional model has no text encoder: pass text_encoder=... to GaussianDiffusion")
        prompts = check_prompts(prompts, self.text_encoder)
        if len(prompts) == 1:
            prompts = prompts * batch
        if len(prompts) != batch:
            raise ConfigError(f"got {len(prompts)} prompts for a batch of {batch}; give one prompt or one per image")
        return self.text_encoder.encode(prompts).to(device)

    def conditioned_model_fn(
        self, classes: Tensor | Sequence[int] | int | None, guidance_scale: float, batch: int, device: torch.device,
        prompts: Sequence[str] | str | None = None,
    ) -> ModelFn:
        """The network as a sampler calls it for ``batch`` images: given the class labels or the
        prompts (checked) and, at ``guidance_scale`` != 1, classifier-free guidance around them.
        ``sample``, ``inpaint`` and ``img2img`` all build their model function here, so a new kind
        of condition added here reaches every one of them."""
        labels = self.check_classes(classes, batch, device)
        text = self.encode_prompts(prompts, batch, device) if prompts is not None else None
        if guidance_scale != 1.0 and labels is None and text is None:
            raise ConfigError("guidance_scale needs class labels (classes=...) and a class-conditional model, "
                              "or prompts (prompts=...) and a text-conditional one")
        if text is not None and guidance_scale != 1.0:
            return text_guided_model_fn(self.model, text, guidance_scale)
        if labels is not None and guidance_scale != 1.0:
            return guided_model_fn(self.model, labels, guidance_scale, self.num_classes)
        return self.model_fn(labels, text)

    def check_classes(self, classes: Tensor | Sequence[int] | int | None, batch: int, device: torch.device) -> Tensor | None:
        """Validate user-given class labels: one int or one per image, each in [0, num_classes)."""
        if classes is None:
            return None
        if not self.num_classes:
            raise ConfigError("class labels were given but the model is not class-conditional (build it with num_classes)")
        labels = torch.as_tensor(classes, dtype=torch.long).cpu().flatten()
        if labels.numel() == 1:
            labels = labels.expand(batch)
        if labels.numel() != batch:
            raise ConfigError(f"got {labels.numel()} class labels for a batch of {batch}; give one label or one per image")
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.numel():
            raise ConfigError(f"class label {int(bad[0])} is out of range; labels run from 0 to {self.num_classes - 1}")
        return labels.to(device)

    def _check_images(self, images: Tensor) -> None:
        expected = (self.channels, *self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ConfigError(
                f"expected images of shape [batch, {expected[0]}, {expected[1]}, {expected[2]}]; got {list(images.shape)}"
            )

    # ---- training ---------------------------------------------------------------------------

    def loss_terms(
        self,
        images: Tensor,
        classes: Tensor | None = None,
        *,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        keep_labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        network: nn.Module | None = None,
        text: TextBatch | None = None,
    ) -> LossTerms:
        """Per-sample training losses of a batch (see :func:`ddpm.losses.training_losses`).

        ``t``, ``noise`` and ``keep_labels`` (bool [B]: False drops that label to the null label)
        are drawn from ``generator`` unless given; a trainer that splits one batch over several
        processes draws them once for the whole batch. ``network`` replaces the model for this
        call (a DistributedDataParallel wrapper of it, say). ``text`` (a text-conditional model):
        the encoded captions, one per image; ``keep_labels`` then keeps captions (False: the
        learned null caption), drawn with probability ``p_uncond`` unless given.
        """
        self._check_images(images)
        x0 = normalize(images) if self.auto_normalize else images
        if text is not None:
            if classes is not None:
                raise ConfigError("give class labels or captions, not both")
            if len(text) != x0.shape[0]:
                raise ConfigError(f"got {len(text)} captions for a batch of {x0.shape[0]} images")
            keep = keep_labels
            if keep is None and self.training and self.p_uncond > 0:
                # caption dropout trains the null caption for classifier-free guidance
                keep = torch.rand(x0.shape[0], device=x0.device, generator=generator) >= self.p_uncond
            text = text.to(x0.device).with_drop(None if keep is None else ~keep.to(x0.device))
        if classes is not None:
            classes = classes.to(x0.device).long()
            if keep_labels is None and self.training and self.p_uncond > 0:
                # label dropout trains the null label for classifier-free guidance
                keep_labels = torch.rand(classes.shape, device=classes.device, generator=generator) >= self.p_uncond
            if keep_labels is not None:
                classes = torch.where(keep_labels.to(classes.device), classes, torch.full_like(classes, self.num_classes))
        net = network if network is not None else self.model
        return training_losses(
            (lambda x, tt: net(x, tt, text=text)) if text is not None
            else (lambda x, tt: net(x, tt, classes)) if classes is not None else (lambda x, tt: net(x, tt)),
            self.schedule_on(x0.device),
            x0,
            objective=self.objective,
            loss_type=self.loss_type,
            variance_type=self.variance_type,
            min_snr_gamma=self.min_snr_gamma,
            offset_noise_strength=self.offset_noise_strength,
            vlb_weight=self.vlb_weight,
            t=t,
            noise=noise,
            generator=generator,
        )

    def forward(self, images: Tensor, classes: Tensor | None = None, *, prompts: Sequence[str] | None = None) -> Tensor:
        """The scalar training loss of ``images`` [B, C, H, W] in [0, 1] (with their captions
        ``prompts``, one per image, for a text-conditional model)."""
        text = self.encode_prompts(prompts, images.shape[0], images.device) if prompts is not None else None
        return self.loss_terms(images, classes, text=text).loss.mean()

    # ---- sampling and likelihood --------------------------------------------------------------

    @torch.inference_mode()
    def sample(
        self,
        batch_size: int = 16,
        return_all_timesteps: bool = False,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        eta: float = 0.0,
        grid: str | None = None,
        classes: Tensor | Sequence[int] | int | None = None,
        guidance_scale: float = 1.0,
        clip: str | bool | None = "static",
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        callback: Callback | None = None,
        x_start: Tensor | None = None,
        t_start: float | None = None,
        timesteps: Sequence[float] | None = None,
        final: str = "clean",
        threshold_percentile: float = 0.995,
        threshold_max: float | None = None,
        clipped_eps: bool = True,
        prompts: Sequence[str] | str | None = None,
    ) -> Tensor:
        """``batch_size`` new images [B, C, H, W] in [0, 1].

        ``sampler`` is ``ancestral`` (Ho et al. Algorithm 2), ``ddim`` (with ``eta``), ``dpm++2m``
        or another name of :data:`ddpm.sampling.SAMPLERS` (default: ancestral, or ddim when
        ``sampling_timesteps`` < T, as in lucidrains' package); ``steps`` model evaluations
        (default: ``sampling_timesteps`` if given, else :data:`DEFAULT_STEPS` of the sampler) on
        the timestep ``grid`` (default: the sampler's best). With a class-conditional model,
        ``classes`` (one label or one per image) and ``guidance_scale`` (classifier-free guidance;
        1 = plain conditional) choose what to draw; with a text-conditional model, ``prompts`` (one,
        or one per image) and ``guidance_scale`` do. ``return_all_timesteps`` returns [B, steps + 1, C, H, W] from x_T to x_0.
        ``callback(i, x_t, pred_x0)`` sees the library's internal tensors, in [-1, 1]. The network
        runs in eval mode (no dropout) whatever mode the module is in.

        Where to start: ``noise`` is x at the first visited time (default: drawn from ``generator``);
        ``t_start`` starts the grid there instead of at T-1, and ``timesteps`` lists the times
        outright (then ``steps`` and ``grid`` are not used). With ``x_start`` (images [B, C, H, W]
        in [0, 1]) sampling starts from those images noised to the first visited time,
        sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) noise (SDEdit-style image-to-image). ``final``,
        ``threshold_percentile``, ``threshold_max`` and ``clipped_eps`` (DDIM) are described in
        :mod:`ddpm.sampling.common`.
        """
        device = self.device
        model_fn = self.conditioned_model_fn(classes, guidance_scale, batch_size, device, prompts)
        shape = (batch_size, self.channels, *self.image_size)
        x_T = noise.to(device) if noise is not None else torch.randn(shape, generator=generator, device=device)
        if sampler is None:
            sampler = "ddim" if self.sampling_timesteps < self.num_timesteps else "ancestral"
        steps, grid = steps_and_grid(sampler, steps, grid, self.num_timesteps, t_start=t_start,
                                     default_steps=self.sampling_timesteps if self._steps_given else None)
        denoiser = Denoiser(model_fn, self.objective, self.variance_type, clip, threshold_percentile, threshold_max,
                            clipped_eps)
        plan = make_plan(self.schedule_on(device), None if timesteps is not None else steps, grid, timesteps, t_start,
                         final)
        if x_start is not None:
            self._check_images(x_start)
            if x_start.shape[0] != batch_size:
                raise ConfigError(f"x_start holds {x_start.shape[0]} images for a batch of {batch_size}; give one per image")
            x0 = normalize(x_start.to(device)) if self.auto_normalize else x_start.to(device)
            x_T = q_sample_at(x0, plan.alpha_bars[0], x_T.to(x0.dtype))  # q(x_t | x_0), Ho et al. eq. 4
        frames = [x_T]

        def record(i: int, x: Tensor, pred_x0: Tensor) -> None:
            if i > 0:
                frames.append(x)
            if callback is not None:
                callback(i, x, pred_x0)

        with eval_mode(self):  # no dropout: the same generator gives the same images
            x0 = run_sampler(sampler, denoiser, x_T, plan, eta=eta, generator=generator,
                             callback=record if return_all_timesteps else callback)
        out = torch.stack(frames + [x0], dim=1) if return_all_timesteps else x0
        return unnormalize(out) if self.auto_normalize else out

    def draw(
        self,
        batch_size: int,
        settings: SampleConfig,
        *,
        classes: Tensor | Sequence[int] | int | None = None,
        prompts: Sequence[str] | str | None = None,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
    ) -> Tensor:
        """:meth:`sample` with a run's ``[sample]`` settings, whole (:class:`ddpm.config.SampleConfig`):
        its steps 0, grid "" and threshold_max 0 are the defaults, its guidance_scale None is auto
        (:func:`ddpm.config.resolved_guidance`). ``batch_size`` images [B, C, H, W] in [0, 1]."""
        sc = settings
        return self.sample(batch_size, sampler=sc.sampler, steps=sc.steps or None, eta=sc.eta, grid=sc.grid or None,
                           clip=sc.clip, final=sc.final, threshold_percentile=sc.threshold_percentile,
                           threshold_max=sc.threshold_max or None, clipped_eps=sc.clipped_eps,
                           guidance_scale=resolved_guidance(sc.guidance_scale, bool(self.num_classes)), classes=classes,
                           prompts=prompts, generator=generator, callback=callback)

    def bits_per_dim(self, images: Tensor, classes: Tensor | None = None, *, generator: torch.Generator | None = None) -> BitsPerDim:
        """The variational bound of 8-bit ``images`` [B, C, H, W] in [0, 1], in bits/dim."""
        self._check_images(images)
        x0 = normalize(images) if self.auto_normalize else images
        with eval_mode(self):
            return bits_per_dim(
                self.model_fn(self.check_classes(classes, images.shape[0], x0.device)),
                self.schedule_on(x0.device),
                x0,
                objective=self.objective,
                variance_type=self.variance_type,
                generator=generator,
            )
