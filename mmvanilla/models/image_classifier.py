"""An image classifier for mmengine's runner, trained the way the paper trains VanillaNet on ImageNet.

The paper's recipe is timm's: mixup/cutmix with label smoothing (``timm.data.Mixup``) and a binary cross-entropy on
the soft targets (``timm.loss.BinaryCrossEntropy``). :class:`ImageClassifier` wires those parts, as they are, into
mmengine's ``BaseModel`` interface (``loss`` / ``predict`` / ``tensor`` modes), so ``tools/train.py`` and
``tools/test.py`` run classification configs like detection ones.
"""
from __future__ import annotations

import torch
from mmdet.registry import MODELS
from mmengine.model import BaseModel
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy
from torch import Tensor, nn

# timm's losses on soft targets (N, C), as ImageClassifier gives them, by their timm names.
MODELS.register_module(module=BinaryCrossEntropy)
MODELS.register_module(module=SoftTargetCrossEntropy)


@MODELS.register_module()
class ImageClassifier(BaseModel):
    """A classification network trained on soft targets: mixup/cutmix and label smoothing, then ``loss``.

    Args:
        network (dict | nn.Module): The network, e.g. ``dict(type='VanillaNetClassifier', arch='5')``: takes
            images ``(N, 3, H, W)``, returns logits ``(N, num_classes)``; it must have ``num_classes``.
        loss (dict): A loss on soft targets. Defaults to ``dict(type='BinaryCrossEntropy', smoothing=0.0)`` (the
            smoothing is applied to the targets here, once).
        mixup (dict | None): Arguments of ``timm.data.Mixup`` (``mixup_alpha``, ``cutmix_alpha``, ``prob``,
            ``switch_prob``, ``mode`` ...) for training batches; None for none. Needs even batch sizes (set
            ``drop_last=True``). Defaults to None.
        label_smoothing (float): Smoothing of the training targets, with or without mixup. Defaults to 0.1.
        data_preprocessor (dict | None): mmengine data preprocessor; the default moves batches to the device.
            Defaults to None.
        channels_last (bool): Run the network in the channels_last memory layout (weights and images). On a GPU
            that is where cuDNN takes VanillaNet's 7x7 depthwise convolutions, the fastest training path measured
            (see the README's speed section). Defaults to False.
        init_cfg (dict | None): mmengine init config. Defaults to None.

    Example:
        >>> model = ImageClassifier(dict(type='VanillaNetClassifier', num_classes=4,
        ...                              arch=dict(stem_channels=8, widths=[16], strides=[2])))
        >>> images, labels = torch.rand(2, 3, 32, 32), torch.tensor([0, 3])
        >>> sorted(model(images, labels, mode='loss')), model(images, mode='tensor').shape
        (['loss'], torch.Size([2, 4]))
    """

    def __init__(self, network: dict | nn.Module, loss: dict | None = None, mixup: dict | None = None,
                 label_smoothing: float = 0.1, data_preprocessor: dict | None = None, channels_last: bool = False,
                 init_cfg: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.network = MODELS.build(network) if isinstance(network, dict) else network
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.network.to(memory_format=self.memory_format)
        self.num_classes = getattr(self.network, 'num_classes', 0)
        if not self.num_classes:
            raise ValueError(f'the network ({type(self.network).__name__}) must classify: give it num_classes > 0')
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f'label_smoothing must lie in [0, 1), got {label_smoothing}')
        self.label_smoothing = label_smoothing
        self.loss_module = MODELS.build(loss or dict(type='BinaryCrossEntropy', smoothing=0.0))
        self.mixup = None
        if mixup is not None:
            self.mixup = Mixup(**mixup, label_smoothing=label_smoothing, num_classes=self.num_classes)

    def forward(self, inputs: Tensor, data_samples: Tensor | None = None, mode: str = 'tensor'):
        """``loss``: dict(loss=...); ``predict``: one dict(pred_score, gt_label) per image; ``tensor``: logits."""
        inputs = inputs.contiguous(memory_format=self.memory_format)
        if mode == 'loss':
            return dict(loss=self.loss(inputs, data_samples))
        if mode == 'predict':
            scores = self.network(inputs).softmax(dim=1)
            labels = data_samples if data_samples is not None else [None] * len(scores)
            return [dict(pred_score=score, gt_label=label) for score, label in zip(scores, labels)]
        if mode == 'tensor':
            return self.network(inputs)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    def soft_targets(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The training batch after mixup/cutmix (if any) and its smoothed one-hot targets ``(N, num_classes)``."""
        if self.mixup is not None:
            if len(inputs) % 2:
                raise ValueError(f'mixup/cutmix pairs up the images of a batch, so batches must be even; got '
                                 f'{len(inputs)}: use an even batch_size with drop_last=True in the train_dataloader')
            return self.mixup(inputs, labels)
        return inputs, mixup_target(labels, self.num_classes, lam=1.0, smoothing=self.label_smoothing)

    def loss(self, inputs: Tensor, labels: Tensor) -> Tensor:
        inputs, targets = self.soft_targets(inputs, labels)
        return self.loss_module(self.network(inputs), targets)
