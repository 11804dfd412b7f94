"""Top-k accuracy of a classifier, for mmengine's evaluator (the paper reports ImageNet top-1)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric


@METRICS.register_module()
class Accuracy(BaseMetric):
    """Top-k accuracy in percent, reported as ``accuracy/top1``, ``accuracy/top5`` ...

    Takes what :class:`mmvanilla.models.ImageClassifier` predicts: one ``dict(pred_score, gt_label)`` per image.

    Args:
        topk (Sequence[int]): The k's. Defaults to ``(1, 5)``; a k larger than the number of classes counts every
            image as right, so it is skipped with the classes known.
        collect_device (str): Where results are gathered across processes. Defaults to ``'cpu'``.
        prefix (str | None): Prefix of the metric names. Defaults to ``'accuracy'``.

    Example:
        >>> metric = Accuracy(topk=(1, 2))
        >>> metric.process({}, [dict(pred_score=torch.tensor([0.1, 0.7, 0.2]), gt_label=torch.tensor(2))])
        >>> metric.compute_metrics(metric.results)
        {'top1': 0.0, 'top2': 100.0}
    """

    default_prefix = 'accuracy'

    def __init__(self, topk: Sequence[int] = (1, 5), collect_device: str = 'cpu', prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not topk or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in topk):
            raise ValueError(f'topk must be positive integers, got {topk!r}')
        self.topk = tuple(topk)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if sample.get('gt_label') is None:
                raise ValueError('Accuracy needs the true label of every image (gt_label); this dataset has none')
            score = sample['pred_score'].detach().float().cpu()
            label = int(sample['gt_label'])
            # Rank of the true class: how many classes score strictly higher.
            rank = int((score > score[label]).sum())
            self.results.append(dict(rank=rank, num_classes=len(score)))

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        ranks = torch.tensor([r['rank'] for r in results])
        num_classes = results[0]['num_classes']
        return {f'top{k}': float((ranks < k).float().mean() * 100) for k in self.topk if k <= num_classes}
