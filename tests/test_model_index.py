"""model-index.yml: every model config is listed with the paper's figures marked as the paper's, and mmengine still
resolves `mmvanilla::` paths through it."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from mmengine.config.utils import _get_cfg_metainfo

from .conftest import ROOT

PAPER_TOP1 = {'vanillanet5_imagenet': 72.49, 'vanillanet6_imagenet': 76.36, 'vanillanet9_imagenet': 79.87,
              'vanillanet13_imagenet': 82.05}
PAPER_COCO = {'retinanet_vanillanet13_coco': {'box AP': 43.0},
              'mask_rcnn_vanillanet13_coco': {'box AP': 44.3, 'mask AP': 40.1}}


def models() -> dict[str, dict]:
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    found = {}
    for metafile in index['Import']:
        meta = yaml.safe_load((ROOT / metafile).read_text())
        collections = {c['Name'] for c in meta['Collections']}
        for model in meta['Models']:
            assert model['In Collection'] in collections, model['Name']
            found[model['Name']] = model
    return found


def test_every_model_config_is_listed_with_its_config_and_deploy_config():
    listed = models()
    configs = sorted(p.stem for p in (ROOT / 'configs').glob('*.py') if 'tiny_synthetic' not in p.stem)
    assert sorted(listed) == configs
    for name, model in listed.items():
        assert model['Config'] == f'configs/{name}.py'
        assert (ROOT / model['Metadata']['Deploy Config']).is_file(), name


def test_the_results_are_the_papers_and_say_so():
    listed = models()
    for name, top1 in PAPER_TOP1.items():
        (result,) = listed[name]['Results']
        assert result['Metrics'] == {'Top 1 Accuracy': top1} and result['Dataset'] == 'ImageNet-1k'
        assert listed[name]['Weights'] == name.replace('vanillanet', 'vanillanet_').replace('_imagenet', '.pth')
    for name, metrics in PAPER_COCO.items():
        found = {k: v for result in listed[name]['Results'] for k, v in result['Metrics'].items()}
        assert found == metrics
    for model in listed.values():
        assert all(result['Source'] == "the paper's figure, not reproduced here" for result in model['Results'])


def test_mmengine_reads_every_metafile_of_the_index():
    mim = ROOT / 'mmvanilla'  # .mim/ links to the checkout in the editable install the tests run in
    assert _get_cfg_metainfo(str(mim), 'retinanet_vanillanet13_coco.py')['Name'] == 'retinanet_vanillanet13_coco'


@pytest.mark.slow
@pytest.mark.parametrize('base, expect', [
    ('mmvanilla::deploy/retinanet_vanillanet13_coco_deploy.py', 'True 3'),
    ('mmvanilla::_base_/models/retinanet_vanillanet13.py', 'False 3')])
def test_a_config_outside_the_checkout_inherits_packaged_configs_in_the_editable_install(base, expect, tmp_path):
    (tmp_path / 'my_config.py').write_text(f"_base_ = '{base}'\nmodel = dict(bbox_head=dict(num_classes=3))\n")
    script = textwrap.dedent('''
        import mmvanilla
        from mmengine.config import Config
        cfg = Config.fromfile('my_config.py')
        print(cfg.model.backbone.type, cfg.model.backbone.get('deploy', False), cfg.model.bbox_head.num_classes)
    ''')
    proc = subprocess.run([sys.executable, '-W', 'ignore', '-c', script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1].split() == ['VanillaNet', *expect.split()]
    assert Path(ROOT / 'mmvanilla/.mim/configs').resolve() == ROOT / 'configs'  # linked, not copied
