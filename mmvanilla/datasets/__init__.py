from .synthetic_coco import CLASSES, generate_synthetic_coco, mask_to_polygons

__all__ = ['CLASSES', 'generate_synthetic_coco', 'mask_to_polygons']
