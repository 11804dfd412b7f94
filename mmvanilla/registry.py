"""The ``mmvanilla`` registry scope, for configs inherited with ``mmvanilla::``.

mmengine gives the settings of a config inherited as ``mmvanilla::PATH`` the scope ``mmvanilla`` and builds them in
the registries of that scope (importing this module to find them). mmvanilla registers its classes in mmdet's
registries, so that an mmdet config names them with ``type='VanillaNet'``; the registries here are empty children
of mmdet's, and a name looked up in them is found in mmdet's, with mmvanilla's classes (importing ``mmvanilla``
registers them), or in mmengine's.
"""
from mmdet import registry as mmdet_registry
from mmengine.registry import Registry

#: The registries mmdet defines (``mmdet.registry``), each as this scope's child of mmdet's.
NAMES = [name for name in dir(mmdet_registry)
         if name.isupper() and not name.startswith('MMENGINE_') and isinstance(getattr(mmdet_registry, name), Registry)]

for _name in NAMES:
    _parent = getattr(mmdet_registry, _name)
    globals()[_name] = Registry(_parent.name, parent=_parent, scope='mmvanilla', locations=['mmvanilla'])

__all__ = ['NAMES', *NAMES]
