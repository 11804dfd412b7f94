"""ImageNet's folder layout (``root/<class>/<image>``) as an mmengine dataset, with timm's transforms."""
from __future__ import annotations

import os.path as osp

from mmdet.registry import DATASETS
from timm.data import create_transform
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder


@DATASETS.register_module()
class ImageFolderDataset(Dataset):
    """Images in ``data_root/data_prefix/<class>/*`` (ImageNet's ``train/`` and ``val/`` layout), transformed by
    ``timm.data.create_transform(**transform)``.

    Items are ``dict(inputs=image tensor, data_samples=class index)``, which mmengine's ``default_collate`` batches
    for :class:`mmvanilla.models.ImageClassifier`. Classes are the sub-folders, sorted, as in torchvision and timm.

    Args:
        data_root (str): Dataset root, e.g. ``'data/imagenet'``.
        data_prefix (str): The split's folder under ``data_root``, e.g. ``'train'``. Defaults to ``''``.
        transform (dict | None): Arguments of ``timm.data.create_transform``: ``input_size``, ``is_training``,
            ``auto_augment``, ``interpolation``, ``crop_pct``, ``mean``, ``std`` ... Defaults to None (timm's eval
            transform at 224).

    Example:
        >>> import tempfile
        >>> from mmvanilla.datasets import generate_synthetic_image_folder
        >>> root = tempfile.mkdtemp() + '/synthetic_imagenet'
        >>> _ = generate_synthetic_image_folder(root, num_train=1, num_val=2)
        >>> dataset = ImageFolderDataset(root, 'val', dict(input_size=64, crop_pct=1.0))
        >>> dataset.metainfo['classes'], dataset[0]['inputs'].shape, dataset[0]['data_samples']
        (('circle', 'square', 'star', 'triangle'), torch.Size([3, 64, 64]), 0)
    """

    def __init__(self, data_root: str, data_prefix: str = '', transform: dict | None = None):
        root = osp.join(data_root, data_prefix)
        if not osp.isdir(root):
            raise FileNotFoundError(
                f'image folder {root} not found (data_root={data_root!r}, data_prefix={data_prefix!r}): put the '
                f'images in {root}/<class>/*.JPEG (ImageNet: data/imagenet/train/n01440764/...), or point the config '
                'at them with --cfg-options train_dataloader.dataset.data_root=PATH')
        self.folder = ImageFolder(root)
        self.transform = create_transform(**(transform or {}))
        self.metainfo = dict(classes=tuple(self.folder.classes))

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, index: int) -> dict:
        path, label = self.folder.samples[index]
        return dict(inputs=self.transform(self.folder.loader(path)), data_samples=label)
