"""Top-k accuracy (mmvanilla/evaluation/accuracy.py)."""
import pytest
import torch
from mmdet.registry import METRICS

from mmvanilla.evaluation import Accuracy


def predictions(scores, labels):
    return [dict(pred_score=torch.tensor(s), gt_label=torch.tensor(l)) for s, l in zip(scores, labels)]


def test_top_k_is_the_percentage_of_images_whose_class_is_among_the_k_best_scores():
    metric = Accuracy(topk=(1, 2, 3))
    scores = [[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [0.2, 0.3, 0.5]]
    metric.process({}, predictions(scores, [0, 1, 0, 2]))  # ranks 0, 1, 2, 0
    assert metric.compute_metrics(metric.results) == {'top1': 50.0, 'top2': 75.0, 'top3': 100.0}


def test_k_beyond_the_number_of_classes_is_skipped():
    metric = Accuracy(topk=(1, 5))
    metric.process({}, predictions([[0.1, 0.9], [0.8, 0.2]], [1, 1]))
    assert metric.compute_metrics(metric.results) == {'top1': 50.0}


def test_metric_is_registered_and_prefixes_its_names():
    metric = METRICS.build(dict(type='Accuracy', topk=(1,)))
    metric.process({}, predictions([[0.1, 0.9]], [1]))
    assert metric.evaluate(1) == {'accuracy/top1': 100.0}


@pytest.mark.parametrize('topk', [(), (0,), (1.5,), (True,)])
def test_bad_topk_is_refused(topk):
    with pytest.raises(ValueError, match='topk'):
        Accuracy(topk=topk)


def test_a_prediction_without_its_true_label_is_refused():
    with pytest.raises(ValueError, match='gt_label'):
        Accuracy().process({}, [dict(pred_score=torch.tensor([0.5, 0.5]), gt_label=None)])
