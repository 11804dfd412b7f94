"""A VanillaNet in mmdet 3.x's own detectors (their configs from the installed mmdet, `mmdet::...`), put there by
`mmvanilla.apis.with_vanillanet`: each builds, takes a training step with a finite loss, and gives the same outputs
after re-parameterization."""
import pytest
import torch
from mmdet.models.detectors import TwoStageDetector
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.structures import InstanceData
from torch.nn.modules.batchnorm import _BatchNorm

from mmvanilla.apis import with_vanillanet
from mmvanilla.deploy import switch_to_deploy
from mmvanilla.models import VanillaNet
from mmvanilla.models.utils import set_act_lambda

# Four stages (strides 4 ... 32) of a few channels: seconds per detector on the CPU.
TINY = dict(stem_channels=8, widths=[16, 32, 48], strides=[2, 2, 2])
IMAGE = (3, 64, 64)
# config, with masks, what else the tiny images need
DETECTORS = {
    'faster_rcnn': ('faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', False, {}),
    'cascade_mask_rcnn': ('cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py', True, {}),
    'fcos': ('fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py', False, {}),
    'atss': ('atss/atss_r50_fpn_1x_coco.py', False, {}),
    # DINO selects num_queries of the encoder's tokens, fewer than 900 in a 64 x 64 image
    'dino': ('dino/dino-4scale_r50_8xb2-12e_coco.py', False, dict(num_queries=30)),
    'rtmdet': ('rtmdet/rtmdet_tiny_8xb32-300e_coco.py', False, {}),
}


def test_the_backbone_is_replaced_and_the_neck_takes_its_channels():
    cfg = with_vanillanet('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', arch='13', act_num=4)
    assert cfg.model.backbone == dict(type='VanillaNet', arch='13', out_indices=(0, 1, 2, 3), act_num=4)
    assert cfg.model.neck.in_channels == [512, 1024, 2048, 4096] and cfg.model.neck.num_outs == 5
    dino = with_vanillanet('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py', arch=TINY)
    assert dino.model.backbone.out_indices == (1, 2, 3)  # strides 8, 16, 32 as ResNet's (1, 2, 3) there
    assert dino.model.neck.in_channels == [16, 32, 48] and dino.model.neck.num_outs == 4
    rtmdet = with_vanillanet('mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py', arch=TINY, out_indices=(2, 3))
    assert rtmdet.model.neck.in_channels == [32, 48]


def test_a_neck_with_more_inputs_than_stages_is_refused():
    with pytest.raises(ValueError, match='the neck takes 4 inputs but this VanillaNet has 3 stages'):
        with_vanillanet('mmdet::atss/atss_r50_fpn_1x_coco.py', arch=dict(stem_channels=8, widths=[16, 32],
                                                                            strides=[2, 2]))


def _outputs(model, data) -> list[torch.Tensor]:
    """The detector's raw outputs. A two-stage detector's RoI head runs on fixed proposals: its RPN's own would be
    chosen by NMS among near-equal scores of an untrained model, where rounding may change the choice."""
    if isinstance(model, TwoStageDetector):
        x = model.extract_feat(data['inputs'])
        boxes = torch.tensor([[0., 0., 32., 32.], [8., 8., 60., 50.], [20., 4., 63., 40.]])
        proposals = [InstanceData(bboxes=boxes.clone()) for _ in data['data_samples']]
        out = (x, model.rpn_head(x), model.roi_head.forward(x, proposals, data['data_samples']))
    else:
        out = model(**data, mode='tensor')

    def flat(o):
        if isinstance(o, torch.Tensor):
            return [o]
        return [t for item in (o.values() if isinstance(o, dict) else o) for t in flat(item)]
    return flat(out)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(DETECTORS))
def test_mmdets_own_detector_trains_with_a_vanillanet_and_reparameterizes_exactly(name):
    config, with_mask, options = DETECTORS[name]
    cfg = with_vanillanet(f'mmdet::{config}', arch=TINY, act_num=1, act_lambda=0.5)
    cfg.model.update(options)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()  # as the runner does: DINO's level embeddings are uninitialized memory until then
    assert isinstance(model.backbone, VanillaNet)
    packed = demo_mm_inputs(2, [IMAGE, IMAGE], num_items=[3, 2], num_classes=5, with_mask=with_mask)

    model.train()
    data = model.data_preprocessor(packed, True)
    loss, _ = model.parse_losses(model.loss(data['inputs'], data['data_samples']))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

    set_act_lambda(model, 1.0)  # deep training done: the precondition of re-parameterization
    generator = torch.Generator().manual_seed(1)
    for m in model.backbone.modules():  # statistics that make folding the norms matter
        if isinstance(m, _BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5, generator=generator)
            m.running_var.uniform_(0.5, 1.5, generator=generator)
    model.eval()
    data = model.data_preprocessor(packed, False)
    with torch.no_grad():
        before = _outputs(model, data)
        switch_to_deploy(model)
        after = _outputs(model, data)
    assert model.backbone.deploy and len(before) == len(after) > 0
    for b, a in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(b.abs().max().item(), 1.0))
