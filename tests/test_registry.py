"""A config that inherits a packaged one (``_base_ = 'mmvanilla::...'``) builds as the runner builds it: mmengine
gives the inherited settings the scope ``mmvanilla``, whose registries (mmvanilla/registry.py) find mmvanilla's
classes, mmdet's and mmengine's."""
from mmengine.config import Config
from mmengine.registry import HOOKS, MODELS

from mmvanilla.engine import DeepTrainingHook
from mmvanilla.models import VanillaNet


def test_an_inherited_configs_hooks_and_model_build_in_the_mmvanilla_scope(tmp_path):
    (tmp_path / 'my_config.py').write_text(
        "_base_ = 'mmvanilla::deploy/retinanet_vanillanet_tiny_synthetic_deploy.py'\n"
        "model = dict(bbox_head=dict(num_classes=3))\n")
    cfg = Config.fromfile(tmp_path / 'my_config.py')
    assert cfg.custom_hooks[0]['_scope_'] == 'mmvanilla'  # mmengine's doing, for inherited settings
    assert isinstance(HOOKS.build(cfg.custom_hooks[0]), DeepTrainingHook)  # mmvanilla's, in mmdet's registry
    model = MODELS.build(cfg.model)  # mmdet's RetinaNet around mmvanilla's VanillaNet
    assert type(model).__name__ == 'RetinaNet' and isinstance(model.backbone, VanillaNet)
    assert model.backbone.deploy and model.bbox_head.num_classes == 3
